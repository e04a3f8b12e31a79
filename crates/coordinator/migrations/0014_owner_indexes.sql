-- The supplier console pages an owner's devices and judges their real ones for rewards; with
-- one owner holding 100,000 devices (see BENCHMARKS.md) both must read that owner's index
-- entries, not the table: (owner, created_at, id) pages in order, (owner, simulated, state)
-- finds the real, unblocked ones. The first replaces the plain owner index.
DROP INDEX devices_by_owner;
CREATE INDEX devices_by_owner ON devices(owner, created_at, id);
CREATE INDEX devices_real_by_owner ON devices(owner, simulated, state);
