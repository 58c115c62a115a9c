-- hqsync store, PostgreSQL dialect. Keep in step with migrations/sqlite.
-- Times are unix milliseconds (BIGINT); JSON is TEXT (decoded by the same
-- code as on SQLite); secrets are `v1:` AES-256-GCM ciphertexts.

CREATE TABLE tenants (
    id                  TEXT    NOT NULL PRIMARY KEY,
    name                TEXT    NOT NULL,
    enabled             BOOLEAN NOT NULL,
    entra_tenant_id     TEXT    NOT NULL,
    client_id           TEXT    NOT NULL,
    client_secret_enc   TEXT    NOT NULL,
    graph_base          TEXT    NOT NULL,
    login_base          TEXT    NOT NULL,
    hellohq_base_url    TEXT    NOT NULL,
    hellohq_token_enc   TEXT    NOT NULL,
    webhook_secrets_enc TEXT    NOT NULL,
    settings            TEXT    NOT NULL,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);

CREATE TABLE mailboxes (
    tenant     TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT   NOT NULL,
    hq_user_id TEXT,
    state      TEXT   NOT NULL,
    settings   TEXT   NOT NULL,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE subscriptions (
    id                  TEXT   NOT NULL PRIMARY KEY,
    tenant              TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    mailbox             TEXT   NOT NULL,
    kind                TEXT   NOT NULL,
    resource            TEXT   NOT NULL,
    client_state_sha256 BYTEA  NOT NULL,
    expires_at          BIGINT NOT NULL,
    state               TEXT   NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant, mailbox);

CREATE TABLE links (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    mailbox           TEXT   NOT NULL,
    kind              TEXT   NOT NULL,
    hq_id             TEXT,
    graph_id          TEXT,
    folder            TEXT,
    base              TEXT   NOT NULL,
    hq_fingerprint    TEXT,
    graph_fingerprint TEXT,
    hq_version        TEXT,
    graph_version     TEXT,
    state             TEXT   NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (tenant, mailbox, kind, hq_id),
    UNIQUE (tenant, mailbox, kind, graph_id)
);

CREATE TABLE cursors (
    tenant     TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    scope      TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, scope, name)
);

-- No foreign key: the journal outlives a deleted tenant (audit trail).
CREATE TABLE journal (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant   TEXT   NOT NULL,
    mailbox  TEXT,
    kind     TEXT,
    hint_id  TEXT,
    action   TEXT   NOT NULL,
    hq_id    TEXT,
    graph_id TEXT,
    detail   TEXT   NOT NULL,
    actor    TEXT,
    at       BIGINT NOT NULL
);
CREATE INDEX journal_tenant_mailbox_kind ON journal (tenant, mailbox, kind, id DESC);
CREATE INDEX journal_tenant_kind ON journal (tenant, kind, id DESC);
CREATE INDEX journal_hint ON journal (hint_id);
CREATE INDEX journal_action ON journal (action, id DESC);
CREATE INDEX journal_at ON journal (at);

CREATE TABLE processed_hints (
    hint_id      TEXT   NOT NULL PRIMARY KEY,
    tenant       TEXT   NOT NULL,
    processed_at BIGINT NOT NULL
);
CREATE INDEX processed_hints_at ON processed_hints (processed_at);

CREATE TABLE local_queue (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload      BYTEA  NOT NULL,
    available_at BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    lease        TEXT,
    leased_until BIGINT,
    state        TEXT   NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    dead_reason  TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX local_queue_next ON local_queue (state, available_at, id);

-- Named leases with an expiry: exactly one active holder (e.g. the scheduler).
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at BIGINT NOT NULL
);
