-- The tenant's capability record (src/model/capabilities.rs): what the
-- connection test found its helloHQ and Exchange Online to do. JSON; '{}'
-- is "never tested", every field then its safe default.
ALTER TABLE tenants ADD COLUMN capabilities TEXT NOT NULL DEFAULT '{}';
