//! Jobs run a command on every node of a cluster; each node's run is a task. The job's state
//! is derived from its tasks' states, never stored independently of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($name:ident $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " {:?}: expected one of {}"),
                        s,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(TaskState "task state" {
    Pending => "pending",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Stopped => "stopped",
});

string_enum!(JobState "job state" {
    Pending => "pending",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Stopped => "stopped",
});

string_enum!(ClusterState "cluster state" {
    Running => "running",
    Terminated => "terminated",
});

string_enum!(ClusterKind "cluster kind" {
    Ray => "ray",
    Plain => "plain",
});

string_enum!(JobKind "job kind" {
    Command => "command",
    Ray => "ray",
});

string_enum!(RayNodeState "Ray node state" {
    Starting => "starting",
    Running => "running",
    Failed => "failed",
    Stopped => "stopped",
});

// The enum comes from `string_enum!`, which has no room for `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for JobKind {
    fn default() -> Self {
        Self::Command
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }

    /// The terminal state for a process that ended with `exit_code` (None: killed by a signal).
    pub fn from_exit(exit_code: Option<i32>, stop_requested: bool) -> TaskState {
        match exit_code {
            Some(0) => Self::Succeeded,
            _ if stop_requested => Self::Stopped,
            _ => Self::Failed,
        }
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }

    /// A job is done when every task is; it failed if any task failed, was stopped if any
    /// task was stopped, and succeeded only if every task succeeded.
    pub fn from_tasks(tasks: &[TaskState]) -> JobState {
        if tasks.is_empty() {
            return Self::Pending;
        }
        if tasks.iter().all(|t| t.is_terminal()) {
            if tasks.contains(&TaskState::Failed) {
                Self::Failed
            } else if tasks.contains(&TaskState::Stopped) {
                Self::Stopped
            } else {
                Self::Succeeded
            }
        } else if tasks.iter().all(|t| *t == TaskState::Pending) {
            Self::Pending
        } else {
            Self::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn job_state_follows_its_tasks() {
        assert_eq!(JobState::from_tasks(&[Pending, Pending]), JobState::Pending);
        assert_eq!(JobState::from_tasks(&[Running, Pending]), JobState::Running);
        assert_eq!(JobState::from_tasks(&[Succeeded, Pending]), JobState::Running);
        assert_eq!(JobState::from_tasks(&[Succeeded, Succeeded]), JobState::Succeeded);
        assert_eq!(JobState::from_tasks(&[Succeeded, Failed]), JobState::Failed);
        assert_eq!(JobState::from_tasks(&[Stopped, Succeeded]), JobState::Stopped);
        assert_eq!(JobState::from_tasks(&[Stopped, Failed]), JobState::Failed);
        assert_eq!(JobState::from_tasks(&[]), JobState::Pending);
    }

    #[test]
    fn exit_codes_map_to_task_states() {
        assert_eq!(TaskState::from_exit(Some(0), true), Succeeded);
        assert_eq!(TaskState::from_exit(Some(3), false), Failed);
        assert_eq!(TaskState::from_exit(None, true), Stopped);
        assert_eq!(TaskState::from_exit(None, false), Failed);
    }

    #[test]
    fn names_round_trip() {
        for s in [Pending, Running, Succeeded, Failed, Stopped] {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
        assert!("exploded".parse::<JobState>().is_err());
    }
}
