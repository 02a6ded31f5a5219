//! Dashboard accounts and passwords: where the `admin` and `viewer` password hashes come
//! from (the environment, or the one `up` generates at first start and keeps in
//! `dashboard_users`), argon2 hashing and verification. Plain passwords are never logged,
//! stored or kept after hashing; the generated one is handed back once for `up` to print.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::Secrets;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees everything and acts (retry, cancel, pause, trigger …).
    Admin,
    /// Read only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// One login: a username (`admin` or `viewer`), its role and its argon2 PHC hash.
#[derive(Clone)]
pub struct Account {
    pub username: String,
    pub role: Role,
    hash: String,
}

// Hand-written so a debug print never shows the hash.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Account({}, {})", self.username, self.role.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{var} is not an argon2 PHC string (expected `$argon2id$v=19$…`)")]
    BadHash { var: &'static str },
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot draw random bytes: {0}")]
    Random(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The accounts the dashboard accepts, and the password generated now (to print once).
pub struct Resolved {
    pub accounts: Vec<Account>,
    pub generated_password: Option<String>,
}

impl Account {
    /// An account from a known PHC hash (checked to parse).
    pub fn from_hash(username: &str, role: Role, hash: &str) -> Result<Account, AccountError> {
        PasswordHash::new(hash).map_err(|_| AccountError::BadHash {
            var: "password hash",
        })?;
        Ok(Account {
            username: username.into(),
            role,
            hash: hash.into(),
        })
    }

    /// An account from a plain password, hashed now.
    pub fn from_password(username: &str, role: Role, plain: &str) -> Result<Account, AccountError> {
        Ok(Account {
            username: username.into(),
            role,
            hash: hash_password(plain)?,
        })
    }

    /// Argon2 verification; costly on purpose, so run it off the async threads.
    pub async fn verify(&self, plain: String) -> bool {
        let hash = self.hash.clone();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(plain.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

pub fn hash_password(plain: &str) -> Result<String, AccountError> {
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|e| AccountError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&raw).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(plain.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// `n` random bytes as lowercase hex, from the operating system's generator.
pub fn random_hex(n: usize) -> Result<String, AccountError> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| AccountError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One account from `<PREFIX>_HASH` (wins) or the plain `<PREFIX>`.
fn from_env(
    secrets: &Secrets,
    plain_var: &'static str,
    hash_var: &'static str,
    username: &str,
    role: Role,
) -> Result<Option<Account>, AccountError> {
    if let Some(h) = secrets.get(hash_var).filter(|h| !h.is_empty()) {
        return Account::from_hash(username, role, h)
            .map(Some)
            .map_err(|_| AccountError::BadHash { var: hash_var });
    }
    match secrets.get(plain_var).filter(|p| !p.is_empty()) {
        Some(p) => Account::from_password(username, role, p).map(Some),
        None => Ok(None),
    }
}

/// The accounts: `admin` from `COINPILOT_DASHBOARD_PASSWORD[_HASH]`, else the stored one;
/// with neither and `generate`, a random password is drawn, only its hash stored, and the
/// password returned to be printed once. `viewer` from
/// `COINPILOT_DASHBOARD_VIEWER_PASSWORD[_HASH]` when set.
pub async fn resolve(
    pool: &PgPool,
    secrets: &Secrets,
    generate: bool,
    now: DateTime<Utc>,
) -> Result<Resolved, AccountError> {
    let mut accounts = Vec::new();
    let mut generated_password = None;
    let admin = from_env(
        secrets,
        "COINPILOT_DASHBOARD_PASSWORD",
        "COINPILOT_DASHBOARD_PASSWORD_HASH",
        "admin",
        Role::Admin,
    )?;
    match admin {
        Some(a) => accounts.push(a),
        None => {
            let (stored, generated) = stored_admin(pool, generate, now).await?;
            accounts.extend(stored);
            generated_password = generated;
        }
    }
    let viewer = from_env(
        secrets,
        "COINPILOT_DASHBOARD_VIEWER_PASSWORD",
        "COINPILOT_DASHBOARD_VIEWER_PASSWORD_HASH",
        "viewer",
        Role::Viewer,
    )?;
    accounts.extend(viewer);
    Ok(Resolved {
        accounts,
        generated_password,
    })
}

/// The stored admin account, generating it when asked and absent. Two replicas starting
/// together race on the primary key: the loser reads the winner's hash and prints nothing.
async fn stored_admin(
    pool: &PgPool,
    generate: bool,
    now: DateTime<Utc>,
) -> Result<(Option<Account>, Option<String>), AccountError> {
    const READ: &str = "SELECT password_hash FROM dashboard_users WHERE username = 'admin'";
    if let Some(h) = sqlx::query_scalar::<_, String>(READ)
        .fetch_optional(pool)
        .await?
    {
        return Ok((Some(Account::from_hash("admin", Role::Admin, &h)?), None));
    }
    if !generate {
        return Ok((None, None));
    }
    // 128 bits: strong, and still short enough to type.
    let password = random_hex(16)?;
    let hash = hash_password(&password)?;
    let inserted = sqlx::query(
        "INSERT INTO dashboard_users (username, role, password_hash, created_at)
         VALUES ('admin', 'admin', $1, $2) ON CONFLICT (username) DO NOTHING",
    )
    .bind(&hash)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Box::pin(stored_admin(pool, false, now)).await;
    }
    Ok((
        Some(Account::from_hash("admin", Role::Admin, &hash)?),
        Some(password),
    ))
}
