//! Tokens: JWT HS256 with the claims of PRODUCT.md section 3, and the server secret.
//!
//! The secret comes from `--secret` / `COPANEL_SECRET`, else from `DATA/secret`, generated with
//! 32 random bytes on first start (mode 0600 on Unix).

use crate::domain::Principal;
use copanel_protocol::{stream::valid_id, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The claims copanel reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The operator's (or service's) id.
    pub sub: String,
    /// The company; everything the token reaches is scoped to it.
    pub company: String,
    /// `operator`, `supervisor`, `admin` or `service`.
    pub role: Role,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Groups the operator belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// The principal these claims describe.
    pub fn principal(&self) -> Principal {
        Principal {
            id: self.sub.clone(),
            role: self.role,
            groups: self.groups.clone(),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the header or query.
    #[error("no token: send Authorization: Bearer <token> or ?token=<token>")]
    Missing,
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, bad shape, wrong algorithm or bad claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies and mints tokens with one HS256 secret.
#[derive(Clone)]
pub struct Auth {
    /// Keys derived once from the secret; shared by every connection.
    keys: Arc<(EncodingKey, DecodingKey)>,
}

impl Auth {
    /// Keys for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Auth {
            keys: Arc::new((
                EncodingKey::from_secret(secret),
                DecodingKey::from_secret(secret),
            )),
        }
    }

    /// Checks a token and its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.1, &v).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        // jsonwebtoken accepts a token during its `exp` second; a connection is closed at `exp`,
        // so the upgrade must refuse from that second on too.
        if c.exp <= now_secs() {
            return Err(AuthError::Expired);
        }
        if !valid_id(&c.sub) {
            return Err(AuthError::Invalid(
                "sub must be 1 to 128 characters of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        if !valid_id(&c.company) {
            return Err(AuthError::Invalid(
                "company must be 1 to 128 characters of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        if c.groups.len() > 100
            || c.groups
                .iter()
                .any(|g| g.is_empty() || g.chars().count() > 128)
        {
            return Err(AuthError::Invalid(
                "groups: at most 100, each 1 to 128 characters".into(),
            ));
        }
        Ok(c)
    }

    /// Signs claims into a token.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.keys.0)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads `DIR/secret`, creating it with 32 random bytes (hex) if it does not exist.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join("secret");
    match std::fs::read(&path) {
        Ok(s) => {
            let s = String::from_utf8_lossy(&s).trim().as_bytes().to_vec();
            if s.len() < 16 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} holds fewer than 16 bytes", path.display()),
                ));
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = data_dir.join("secret.tmp");
            std::fs::write(&tmp, hex.as_bytes())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            }
            std::fs::rename(&tmp, &path)?;
            Ok(hex.into_bytes())
        }
        Err(e) => Err(e),
    }
}
