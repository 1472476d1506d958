//! [`FileTokenStore`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use subscribe_client::{CachedToken, TokenStore, TokenStoreError};
use subscribe_types::{AccessToken, AppId};
use tokio::sync::Mutex;

/// One app's stored token: its text and its expiry in Unix milliseconds
/// (`CachedToken::to_parts`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    token: String,
    expires_at_ms: u64,
}

/// Access tokens in a JSON file (appid → token and expiry), for one process. The file holds
/// secrets: give it the permissions you give the AppSecret.
#[derive(Debug)]
pub struct FileTokenStore {
    path: PathBuf,
    /// Serializes read-modify-write within this process.
    lock: Mutex<()>,
}

impl FileTokenStore {
    /// A store in `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), lock: Mutex::new(()) }
    }

    fn read(&self) -> Result<BTreeMap<String, Stored>, TokenStoreError> {
        crate::read_json(&self.path).map_err(TokenStoreError::new)
    }

    fn write(&self, tokens: &BTreeMap<String, Stored>) -> Result<(), TokenStoreError> {
        let bytes = serde_json::to_vec(tokens).map_err(TokenStoreError::new)?;
        crate::write_atomically(&self.path, &bytes).map_err(TokenStoreError::new)
    }
}

fn cached(s: &Stored) -> Result<CachedToken, TokenStoreError> {
    CachedToken::from_parts(&s.token, s.expires_at_ms).map_err(TokenStoreError::new)
}

#[subscribe_client::async_trait]
impl TokenStore for FileTokenStore {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        let _guard = self.lock.lock().await;
        self.read()?.get(app.as_str()).map(cached).transpose()
    }

    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let _guard = self.lock.lock().await;
        let mut tokens = self.read()?;
        let (text, expires_at_ms) = token.to_parts();
        // The token that expires later wins: an older refresh finishing late changes nothing.
        if let Some(kept) = tokens.get(app.as_str()).filter(|s| s.expires_at_ms >= expires_at_ms) {
            return cached(kept);
        }
        tokens.insert(app.as_str().to_owned(), Stored { token: text.to_owned(), expires_at_ms });
        self.write(&tokens)?;
        Ok(token.clone())
    }

    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        let _guard = self.lock.lock().await;
        let mut tokens = self.read()?;
        // Only the rejected token goes: one refreshed meanwhile stays.
        if tokens.get(app.as_str()).is_none_or(|s| s.token != rejected.expose_secret()) {
            return Ok(false);
        }
        tokens.remove(app.as_str());
        self.write(&tokens)?;
        Ok(true)
    }
}
