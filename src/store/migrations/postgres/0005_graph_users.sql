-- The Graph user behind each mailbox (issue #19 item 8): its object id,
-- resolved from the helloHQ work email (by mail, then proxyAddresses) and
-- used as the key of every Graph call and subscription; or why it did
-- not resolve, how often that was tried and when last.
ALTER TABLE mailboxes ADD COLUMN graph_user_id TEXT;
ALTER TABLE mailboxes ADD COLUMN graph_user_error TEXT;
ALTER TABLE mailboxes ADD COLUMN graph_user_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN graph_user_checked_at BIGINT;
