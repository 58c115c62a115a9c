-- Ids of deleted tenants (issue #20, finding 7): never given to a new
-- tenant, so a new tenant can never see the journal the old one left.
CREATE TABLE retired_tenants (
    id         TEXT   NOT NULL PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
