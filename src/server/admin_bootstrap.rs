//! The first admin (`[auth] admin_user`), registered by the shard that owns that user id when
//! the server starts with auth on and no such user exists yet. Its password is the config's
//! `[auth] admin_password`, else a random one written once to `<storage>/admin-password`
//! (mode 0600) for the operator to read: never to the log. The users of `[[auth.users]]` are
//! registered the same way, each by its own shard, with the password and role the config gives;
//! one that exists already is left as it is (a password changed through the config would
//! otherwise change at every restart).

use super::auth::UserId;
use super::auth::{random_password, write_secret_file};
use super::config::{AuthConfig, ConfiguredUser};
use super::conn::ShardContext;
use super::credentials::{hash_off_executor, Password};
use super::service::{Action, Answer, Query};
use glommio::channels::local_channel::LocalReceiver;
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
        register(ctx, conn, &answers, user_id, password, true).await
    }
    .await;
    ctx.unregister(conn);
    result
}

/// Registers `user` unless a user of that name exists (then warns if its role differs from the
/// config's). Call on the shard that owns the user id, with its committer running.
pub async fn ensure_user(ctx: &ShardContext, user: &ConfiguredUser) -> Result<(), String> {
    let (conn, answers) = ctx.register();
    let result = register_unless_present(ctx, conn, &answers, user.user_id, &user.password.0, user.admin).await;
    ctx.unregister(conn);
    result
}

async fn register_unless_present(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
    password: &str,
    admin: bool,
) -> Result<(), String> {
    match ctx.call_answer(conn, answers, Action::Query(Query::User(user_id))).await {
        Answer::User(Some(record)) => {
            if record.admin != admin {
                tracing::warn!(
                    "[[auth.users]] {user_id} exists with admin = {}, the config says {admin}: left as it is",
                    record.admin
                );
            }
            return Ok(());
        }
        Answer::User(None) => {}
        _ => return Err(format!("looking up user {user_id} failed")),
    }
    register(ctx, conn, answers, user_id, password.to_owned(), admin).await
}

/// Registers `user_id` with `password` (hashed off the executor) and `admin`, durably.
async fn register(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
    password: String,
    admin: bool,
) -> Result<(), String> {
    let hash = hash_off_executor(password).await?;
    let reply = ctx.call(conn, answers, Action::Register { user_id, password: Password::Hashed(hash), admin }).await;
    if reply.status == 200 {
        tracing::info!("registered user {user_id} from the config (admin = {admin})");
        Ok(())
    } else {
        Err(format!("registering user {user_id}: {}", String::from_utf8_lossy(&reply.body)))
    }
}
