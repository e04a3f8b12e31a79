-- Challenges a device left without a verdict (declined, aborted) in a row: each one doubles
-- the wait before the next, so a device that keeps declining costs the network a challenge
-- an hour, not one a minute; a pass resets it.
ALTER TABLE devices ADD COLUMN inconclusive_in_row INTEGER NOT NULL DEFAULT 0;
