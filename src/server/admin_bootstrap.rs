//! The first admin (`[auth] admin_user`), registered by the shard that owns that user id when
//! the server starts with auth on and no such user exists yet. Its password is the config's
//! `[auth] admin_password`, else a random one written once to `<storage>/admin-password`
//! (mode 0600) for the operator to read: never to the log.

use super::auth::{random_password, write_secret_file};
use super::config::AuthConfig;
use super::conn::ShardContext;
use super::credentials::{hash_off_executor, Password};
use super::service::{Action, Answer, Query};
use std::path::Path;

/// The file a generated admin password is written to.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// Registers the admin unless it exists. Call on the shard that owns `auth.admin_user`, with its
/// committer running (the registration is durable before this returns).
pub async fn ensure_admin(ctx: &ShardContext, auth: &AuthConfig, storage: Option<&Path>) -> Result<(), String> {
    let (conn, answers) = ctx.register();
    let user_id = auth.admin_user;
    let result = async {
        match ctx.call_answer(conn, &answers, Action::Query(Query::User(user_id))).await {
            Answer::User(Some(record)) => {
                if !record.admin {
                    tracing::warn!("[auth] admin_user {user_id} is a user without the admin role: no admin this run");
                }
                return Ok(());
            }
            Answer::User(None) => {}
            _ => return Err(format!("looking up the admin user {user_id} failed")),
        }
        let password = match (&auth.admin_password, storage) {
            (Some(password), _) => password.0.clone(),
            (None, Some(dir)) => {
                let password = random_password();
                let path = dir.join(ADMIN_PASSWORD_FILE);
                write_secret_file(&path, format!("{password}\n").as_bytes())?;
                tracing::warn!(
                    "registering admin user {user_id} with a generated password: read it from {} (mode 0600) \
                     and keep it safe, or set [auth] admin_password",
                    path.display()
                );
                password
            }
            (None, None) => {
                tracing::warn!(
                    "auth is on, but there is no admin: set [auth] admin_password (without storage no generated \
                     password can be kept)"
                );
                return Ok(());
            }
        };
        let hash = hash_off_executor(password).await?;
        let register = Action::Register { user_id, password: Password::Hashed(hash), admin: true };
        let reply = ctx.call(conn, &answers, register).await;
        if reply.status == 200 {
            tracing::info!("registered admin user {user_id}");
            Ok(())
        } else {
            Err(format!("registering the admin user {user_id}: {}", String::from_utf8_lossy(&reply.body)))
        }
    }
    .await;
    ctx.unregister(conn);
    result
}
