-- An admission is bound to the claim it proved (`DeviceSpec::admission_claim`: simulated or
-- not, cores, memory, every GPU): each challenge records the claim it was sized for, a pass
-- copies it to the device, and a hello whose claim differs takes the admission away.
ALTER TABLE verifications ADD COLUMN claim_key TEXT;
ALTER TABLE devices ADD COLUMN admitted_claim TEXT;

-- Admissions from before this binding vouch for no recorded claim: those devices prove
-- themselves again at their next hello (`Store::device_hello`).
