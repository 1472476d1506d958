//! [`LostAnswers`]: a store of used states whose writes land and whose answers are lost.

use std::time::SystemTime;

/// A store of used states whose writes land and whose answers are lost: once armed
/// ([`lose_next_mark`](Self::lose_next_mark), [`lose_next_seal`](Self::lose_next_seal)), the
/// next such call is made on the store and then never answers, as a store whose command
/// arrived and whose reply did not, so the client's `store_timeout` ends it with a timeout.
#[derive(Debug)]
pub struct LostAnswers<S: ?Sized> {
    lose_mark: std::sync::atomic::AtomicBool,
    lose_seal: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicUsize,
    store: std::sync::Arc<S>,
}

impl<S: crate::UsedStates + ?Sized> LostAnswers<S> {
    /// `store`, answering every call until armed.
    pub fn new(store: std::sync::Arc<S>) -> Self {
        Self {
            lose_mark: false.into(),
            lose_seal: false.into(),
            lost: std::sync::atomic::AtomicUsize::new(0),
            store,
        }
    }

    /// The next `mark_used` is made, and its answer lost.
    pub fn lose_next_mark(&self) {
        self.lose_mark.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `seal` is made, and its answer lost.
    pub fn lose_next_seal(&self) {
        self.lose_seal.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many calls were made whose answer was lost.
    pub fn lost(&self) -> usize {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// After a call was made: never answers if `armed` was set (and clears it).
    async fn answer<T>(&self, armed: &std::sync::atomic::AtomicBool, answer: T) -> T {
        if armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        answer
    }
}

#[async_trait::async_trait]
impl<S: crate::UsedStates + ?Sized> crate::UsedStates for LostAnswers<S> {
    async fn mark_used(
        &self,
        state: &subscribe_types::Reserved,
        by: &crate::AnswerDigest,
        claim: &crate::Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<crate::StateUse, crate::UsedStatesError> {
        let answer = self.store.mark_used(state, by, claim, expires, now).await;
        self.answer(&self.lose_mark, answer).await
    }

    async fn seal(
        &self,
        state: &subscribe_types::Reserved,
        by: &crate::AnswerDigest,
    ) -> Result<(), crate::UsedStatesError> {
        let answer = self.store.seal(state, by).await;
        self.answer(&self.lose_seal, answer).await
    }

    /// Never loses its answer: the client releases a claim after a lost answer, and that
    /// release must land for the user's retry to go through at once.
    async fn release(
        &self,
        state: &subscribe_types::Reserved,
        by: &crate::AnswerDigest,
        claim: &crate::Claim,
    ) -> Result<(), crate::UsedStatesError> {
        self.store.release(state, by, claim).await
    }
}
