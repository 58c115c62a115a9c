-- The run holding an unfinished claim (a pending link), so that its
-- heartbeat and its release find its rows through an index instead of
-- scanning every link's base. NULL on every complete link.
ALTER TABLE links ADD COLUMN claim_run TEXT;
CREATE INDEX links_claim_run ON links (claim_run) WHERE claim_run IS NOT NULL;
