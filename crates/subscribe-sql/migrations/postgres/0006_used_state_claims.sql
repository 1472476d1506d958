-- Claims on used states (SqlUsedStates): a completion of an answer that goes on (its first
-- use, or a retry) holds a claim on the mark until it seals it, releases the claim (its ledger
-- failed) or the claim lapses (it was dropped). While a claim is live, the same answer completed
-- again is refused as in progress, so two completions of one answer at once (a double submit)
-- cannot both record a grant. claim_id names the completion (32 random hex digits, no user
-- data); claimed_until_ms is when the claim lapses, on the database's clock (0: no claim, as
-- for the marks made before this migration, which are retries as they were).
ALTER TABLE wxsub_used_states
    ADD COLUMN claim_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN claimed_until_ms BIGINT NOT NULL DEFAULT 0;
