-- One worker process at a time per mailbox (issue 19, item 7): the process
-- named by holder works on the mailbox's hints until expires_at (epoch ms),
-- renewing while it has work and deleting the row when idle. A crashed
-- holder's row simply expires and the next process takes the mailbox over.
CREATE TABLE mailbox_leases (
    tenant_id  TEXT   NOT NULL,
    mailbox    TEXT   NOT NULL,
    holder     TEXT   NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, mailbox)
);
