//! A task's output, from raw bytes (a pipe, the Docker log stream) to batched line messages.
//! Lines are cut at `OUTPUT_LINE_BYTES_MAX` so a program that never prints a newline cannot
//! grow the agent's memory or a message past the frame limit.

use super::TaskKey;
use herd_proto::api::Stream;
use herd_proto::worker::{WorkerMessage, OUTPUT_LINES_PER_MESSAGE_MAX, OUTPUT_LINE_BYTES_MAX};
use tokio::sync::mpsc;

/// Splits a byte stream into lines; keeps at most one partial line.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `chunk` (with what came before it), without their line endings.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let room = OUTPUT_LINE_BYTES_MAX - self.partial.len();
            let newline = chunk.iter().position(|&b| b == b'\n');
            match newline {
                Some(at) if at <= room => {
                    self.partial.extend_from_slice(&chunk[..at]);
                    lines.push(self.take());
                    chunk = &chunk[at + 1..];
                }
                _ if chunk.len() >= room => {
                    self.partial.extend_from_slice(&chunk[..room]);
                    lines.push(self.take());
                    chunk = &chunk[room..];
                }
                _ => {
                    self.partial.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
        }
        lines
    }

    /// The last line if the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.partial).trim_end_matches('\r').to_owned();
        self.partial.clear();
        text
    }
}

/// Sends one stream's lines as `TaskOutput` messages.
pub struct OutputSink {
    events: mpsc::Sender<WorkerMessage>,
    task: TaskKey,
    stream: Stream,
}

impl OutputSink {
    pub fn new(events: mpsc::Sender<WorkerMessage>, task: TaskKey, stream: Stream) -> OutputSink {
        OutputSink { events, task, stream }
    }

    /// False once the agent's queue is gone (it is shutting down).
    pub async fn send(&self, mut lines: Vec<String>) -> bool {
        while !lines.is_empty() {
            let rest = lines.split_off(lines.len().min(OUTPUT_LINES_PER_MESSAGE_MAX));
            let message = WorkerMessage::TaskOutput {
                job_id: self.task.job_id.clone(),
                attempt: self.task.attempt,
                stream: self.stream,
                lines,
            };
            if self.events.send(message).await.is_err() {
                return false;
            }
            lines = rest;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_joined_across_chunks_and_cut_when_too_long() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"hel"), Vec::<String>::new());
        assert_eq!(splitter.push(b"lo\r\nwor"), ["hello"]);
        assert_eq!(splitter.push(b"ld\n\n"), ["world", ""]);
        assert_eq!(splitter.finish(), None);
        let long = vec![b'x'; OUTPUT_LINE_BYTES_MAX * 2 + 10];
        let lines = splitter.push(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == OUTPUT_LINE_BYTES_MAX));
        assert_eq!(splitter.finish().unwrap().len(), 10);
    }

    #[test]
    fn a_newline_right_at_the_limit_is_not_an_extra_empty_line() {
        let mut splitter = LineSplitter::default();
        let mut exact = vec![b'y'; OUTPUT_LINE_BYTES_MAX];
        exact.push(b'\n');
        assert_eq!(splitter.push(&exact).len(), 1);
        assert_eq!(splitter.finish(), None);
    }
}
