-- The explorer aggregates and pages the devices table; these indexes let SQLite answer
-- from the index alone instead of reading every row (100,000 devices: see BENCHMARKS.md).
CREATE INDEX devices_supply ON devices(state, gpu_model, gpu_count);
CREATE INDEX devices_by_country ON devices(country, state, gpu_count, simulated);
CREATE INDEX devices_by_age ON devices(created_at, id);
