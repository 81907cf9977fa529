//! Bearer tokens: what `POST /api/auth/login` hands out and every protected endpoint checks.
//!
//! A token is signed, not stored: `qax1.<payload hex>.<mac hex>`, where the payload is the user
//! id, the admin flag, the expiry (unix seconds) and 16 random bytes, and the MAC is keyed
//! BLAKE2b-256 over the payload with the venue's 32-byte key. So any shard checks a token on
//! its own, with no cross-core message and no table to replicate: the hot path stays
//! shared-nothing. The key lives in `<storage>/auth.key` (created once, mode 0600), so tokens
//! outlive a restart; without storage it is random per process.
//!
//! What a token cannot do: be revoked before it expires (keep `[auth] token_ttl_secs` short
//! where that matters), or change its user's role (the role is read at login).

use crate::domain::name::AccountId;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use std::path::Path;

/// User names share the account id's rules: 1..=31 bytes.
pub type UserId = AccountId;

/// Bytes of the signing key.
pub const KEY_BYTES: usize = 32;
const PREFIX: &str = "qax1.";
const NONCE_BYTES: usize = 16;
/// Version byte, admin byte, expiry (u64 BE), nonce; the user id follows.
const FIXED_PAYLOAD: usize = 1 + 1 + 8 + NONCE_BYTES;
const PAYLOAD_VERSION: u8 = 1;

type TokenMac = Blake2bMac<U32>;

/// The venue's token signing key.
#[derive(Clone)]
pub struct TokenKey([u8; KEY_BYTES]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<secret>)")
    }
}

/// Who a valid token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user_id: UserId,
    pub admin: bool,
    /// Unix seconds after which the token is refused.
    pub expires_at_s: u64,
}

/// Why a token is refused (each has its own error code: `HttpErrorCode::{MissingToken,
/// InvalidToken, TokenExpired}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Invalid,
    Expired,
}

impl TokenKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (a venue without storage).
    pub fn random() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key in `path`, created (random, mode 0600, written to a temporary name, synced and
    /// renamed) when the file does not exist yet. A file of the wrong size is an error, never
    /// silently replaced: that would log every user out.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes: [u8; KEY_BYTES] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("{}: {} bytes, a token key has {KEY_BYTES}", path.display(), bytes.len()))?;
                Ok(Self(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random();
                write_secret_file(path, &key.0)?;
                Ok(key)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn mac(&self, payload: &[u8]) -> [u8; 32] {
        // A 32-byte key is always a valid BLAKE2b key (at most 64 bytes).
        let mut mac = <TokenMac as Mac>::new_from_slice(&self.0).expect("32-byte key");
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// A new token for `claims` (a fresh random nonce each time).
    pub fn mint(&self, claims: &Claims) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        self.mint_with_nonce(claims, nonce)
    }

    fn mint_with_nonce(&self, claims: &Claims, nonce: [u8; NONCE_BYTES]) -> String {
        let mut payload = Vec::with_capacity(FIXED_PAYLOAD + claims.user_id.as_str().len());
        payload.push(PAYLOAD_VERSION);
        payload.push(u8::from(claims.admin));
        payload.extend_from_slice(&claims.expires_at_s.to_be_bytes());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(claims.user_id.as_str().as_bytes());
        let mac = self.mac(&payload);
        let mut token = String::with_capacity(PREFIX.len() + 2 * (payload.len() + mac.len()) + 1);
        token.push_str(PREFIX);
        push_hex(&mut token, &payload);
        token.push('.');
        push_hex(&mut token, &mac);
        token
    }

    /// The claims of `token` if this key signed it and it has not expired at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Invalid)?;
        let (payload_hex, mac_hex) = rest.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = from_hex(payload_hex).ok_or(TokenError::Invalid)?;
        let mac = from_hex(mac_hex).ok_or(TokenError::Invalid)?;
        let mut check = <TokenMac as Mac>::new_from_slice(&self.0).expect("32-byte key");
        check.update(&payload);
        // Constant time: a forger learns nothing from how long a refusal takes.
        check.verify_slice(&mac).map_err(|_| TokenError::Invalid)?;
        if payload.len() <= FIXED_PAYLOAD || payload[0] != PAYLOAD_VERSION || payload[1] > 1 {
            return Err(TokenError::Invalid);
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&payload[2..10]);
        let expires_at_s = u64::from_be_bytes(expiry);
        let user = std::str::from_utf8(&payload[FIXED_PAYLOAD..]).map_err(|_| TokenError::Invalid)?;
        let user_id = UserId::new(user).ok_or(TokenError::Invalid)?;
        if now_s >= expires_at_s {
            return Err(TokenError::Expired);
        }
        Ok(Claims { user_id, admin: payload[1] == 1, expires_at_s })
    }
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer(header: Option<&[u8]>) -> Result<&str, TokenError> {
    let value = std::str::from_utf8(header.ok_or(TokenError::Missing)?).map_err(|_| TokenError::Invalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Invalid);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// A random password for the first admin when the config names none (24 characters from a
/// 64-character alphabet: 144 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| ALPHABET[usize::from(b & 63)] as char).collect()
}

/// Writes `bytes` to `path` readable by its owner only: temporary name, fsync, rename.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    })();
    written.map_err(|e| format!("{}: {e}", path.display()))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 512 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes().chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: &str, admin: bool, expires_at_s: u64) -> Claims {
        Claims { user_id: UserId::new(user).unwrap(), admin, expires_at_s }
    }

    #[test]
    fn tokens_verify_with_their_key_until_they_expire() {
        let key = TokenKey::random();
        let c = claims("alice", false, 1_000);
        let token = key.mint(&c);
        assert!(token.starts_with("qax1."), "{token}");
        assert_eq!(key.verify(&token, 999), Ok(c));
        assert_eq!(key.verify(&token, 1_000), Err(TokenError::Expired));
        // Another venue's key, and two tokens of the same claims differ (random nonce).
        assert_eq!(TokenKey::random().verify(&token, 0), Err(TokenError::Invalid));
        assert_ne!(token, key.mint(&c));
        let admin = claims("root", true, 5);
        assert_eq!(key.verify(&key.mint(&admin), 4), Ok(admin));
    }

    #[test]
    fn any_changed_character_is_refused() {
        let key = TokenKey::from_bytes([7; KEY_BYTES]);
        let token = key.mint_with_nonce(&claims("bob", false, u64::MAX), [1; NONCE_BYTES]);
        for at in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != token {
                assert_eq!(key.verify(&changed, 0), Err(TokenError::Invalid), "changed at {at}: {changed}");
            }
        }
        for cut in 0..token.len() {
            assert!(key.verify(&token[..cut], 0).is_err());
        }
        for junk in ["", "qax1.", "qax1..", "qax1.zz.zz", "Bearer x", "qax1.00.00"] {
            assert_eq!(key.verify(junk, 0), Err(TokenError::Invalid), "{junk:?}");
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(None), Err(TokenError::Missing));
        assert_eq!(bearer(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some(b"bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(Some(b"Basic abc")), Err(TokenError::Invalid));
        assert_eq!(bearer(Some(b"Bearer ")), Err(TokenError::Missing));
        assert_eq!(bearer(Some(b"abc")), Err(TokenError::Invalid));
        assert_eq!(bearer(Some(&[0xff, 0x20, 0x41])), Err(TokenError::Invalid));
    }

    #[test]
    fn key_file_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("qax-auth-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.key");
        let _ = std::fs::remove_file(&path);
        let first = TokenKey::load_or_create(&path).unwrap();
        let again = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(TokenKey::load_or_create(&path).unwrap_err().contains("5 bytes"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(random_password().len(), 24);
        assert_ne!(random_password(), random_password());
    }
}
