//! The worker agent: detects the machine, proves who it is with its own device key, dials
//! out to the coordinator, heartbeats, and runs what the coordinator assigns.

mod agent;
pub mod detect;
mod overlay;
mod prover;
mod ray;
mod runtime;
mod throughput;
pub mod tls;

pub use agent::{run, AgentConfig, AgentError, OwnerConsent, RuntimeConfig, RuntimeKind};
/// Key files live in `herd-keys`; re-exported for the agent's users.
pub use herd_keys as keys;
/// Ray's managed environments, for provisioning one ahead of time (a machine with no route to
/// PyPI, a test).
pub use ray::env::PythonEnvs;
pub use runtime::docker::{DEFAULT_IMAGE, LABEL_DEVICE, LABEL_MANAGED};
