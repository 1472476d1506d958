//! [`RedisUsedStates`].

use std::time::SystemTime;

use subscribe_client::{UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::{Redis, RedisError, key_lifetime_ms};

/// Used authorization states in Redis, shared by every instance: a replayed answer is refused
/// whichever instance it reaches. Each used state is one key,
/// `<prefix>:state:<state>`, set with `SET … NX PX <lifetime>`: the first use wins atomically,
/// and the key disappears when the state would fail its own expiry check anyway. The lifetime is
/// the state's expiry less `now`, both on the application's clock (the clock that checks the
/// state's expiry), so a Redis clock ahead of ours cannot drop a mark early. States are
/// digits and hex only, so a key never holds anything but what the client signed.
#[derive(Clone, Debug)]
pub struct RedisUsedStates {
    redis: Redis,
}

impl RedisUsedStates {
    /// Used states on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, state: &Reserved) -> String {
        self.redis.key(&["state", state.as_str()])
    }
}

#[subscribe_client::async_trait]
impl UsedStates for RedisUsedStates {
    async fn first_use(
        &self,
        state: &Reserved,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<bool, UsedStatesError> {
        let mut c = self.redis.conn.clone();
        // A state that expires within the millisecond still needs its mark for that long.
        let lifetime = key_lifetime_ms(expires, now);
        let set: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(self.key(state))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(lifetime)
                    .query_async(&mut c),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn forget(&self, state: &Reserved) -> Result<(), UsedStatesError> {
        let mut c = self.redis.conn.clone();
        let _: i64 = self.redis.run(redis::cmd("DEL").arg(self.key(state)).query_async(&mut c)).await?;
        Ok(())
    }
}

impl From<RedisError> for UsedStatesError {
    fn from(e: RedisError) -> Self {
        UsedStatesError::new(e)
    }
}
