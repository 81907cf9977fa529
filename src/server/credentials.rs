//! Account passwords: what DIFF `req_login` checks. A password given when an account is opened
//! is hashed with Argon2id (a random salt per password, PHC string format) on a blocking
//! thread of the connection's shard, never on a shard's executor: a hash costs tens of
//! milliseconds, which would stall that shard's order flow. Only the hash reaches the engine's
//! shard, the WAL and recovery; the clear text lives in the request that carried it and in
//! nothing else (its `Debug` hides it).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Longest password accepted, in bytes (longer is refused, not cut).
pub const MAX_PASSWORD_BYTES: usize = 128;

/// A password as a request carries it: clear text until the connection's shard hashed it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Clear(String),
    /// An Argon2id PHC string (`$argon2id$v=19$m=...$salt$hash`).
    Hashed(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Clear(_) => f.write_str("Password::Clear(<redacted>)"),
            Password::Hashed(_) => f.write_str("Password::Hashed(<hash>)"),
        }
    }
}

/// Why a password cannot be used.
pub fn check_password(clear: &str) -> Result<(), String> {
    if clear.is_empty() {
        return Err("password must not be empty".into());
    }
    if clear.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password is longer than {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// The PHC string of `clear` with a fresh random salt (blocking: tens of milliseconds).
pub fn hash_password(clear: &str) -> Result<String, String> {
    check_password(clear)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(clear.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `clear` is the password `phc` was made from (blocking; false for a malformed hash).
pub fn verify_password(clear: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(clear.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// [`verify_password`] against `phc`, or, for a user that does not exist (None), against a
/// hash of nothing anyone knows: the same work either way, so a login's timing does not tell
/// which users exist. False for None.
pub fn verify_or_pretend(clear: &str, phc: Option<&str>) -> bool {
    static NOBODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match phc {
        Some(phc) => verify_password(clear, phc),
        None => {
            let nobody = NOBODY.get_or_init(|| hash_password("\u{0}no user\u{0}").unwrap_or_default());
            let _ = verify_password(clear, nobody);
            false
        }
    }
}

/// [`verify_or_pretend`] on the executor's blocking thread pool.
pub async fn verify_user_off_executor(clear: String, phc: Option<String>) -> bool {
    glommio::executor().spawn_blocking(move || verify_or_pretend(&clear, phc.as_deref())).await
}

/// [`hash_password`] on the executor's blocking thread pool.
pub async fn hash_off_executor(clear: String) -> Result<String, String> {
    glommio::executor().spawn_blocking(move || hash_password(&clear)).await
}

/// [`verify_password`] on the executor's blocking thread pool.
pub async fn verify_off_executor(clear: String, phc: String) -> bool {
    glommio::executor().spawn_blocking(move || verify_password(&clear, &phc)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password_and_never_show_it() {
        let phc = hash_password("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(verify_password("s3cret", &phc));
        assert!(!verify_password("s3cret ", &phc));
        assert!(!verify_password("s3cret", "not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(phc, hash_password("s3cret").unwrap());
        assert!(hash_password("").is_err());
        assert!(hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert_eq!(format!("{:?}", Password::Clear("s3cret".into())), "Password::Clear(<redacted>)");
    }
}
