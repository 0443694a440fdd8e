//! The log's writer thread.
//!
//! Request threads hand each formatted line to one thread over a bounded channel. That thread
//! waits for a line, then lets lines gather for [`GATHER`] and writes them all with one
//! system call. Under load one write carries many lines, and request threads do not wake the
//! writer, because it sleeps on a timer rather than waiting on the channel. An idle service costs
//! nothing, because the thread then waits on the channel. When the channel is full, request
//! threads wait rather than drop lines.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather after the first one before it writes them. Lines
/// reach standard output about this much later than they were logged, or later when they
/// arrive while a write is under way.
const GATHER: Duration = Duration::from_millis(5);

/// Capacity the batch buffer keeps between writes. A burst may grow it for one write.
const BATCH_CAPACITY: usize = 64 * 1024;

/// Lines the channel queues before request threads wait for the writer: about 300 ms of the
/// access log at 25,000 requests/s. The channel allocates its slots at start, about 32 bytes
/// each.
const CAPACITY: usize = 8 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Write what has gathered and stop.
    Stop,
}

/// The subscriber's `MakeWriter`, which hands each line to the writer thread.
#[derive(Clone)]
pub struct LineSender {
    sender: SyncSender<Message>,
}

/// A handle that stops the writer thread when dropped, after the thread writes every line
/// queued before.
pub struct WriterGuard {
    sender: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on `output`.
pub fn spawn<W: Write + Send + 'static>(output: W) -> std::io::Result<(LineSender, WriterGuard)> {
    let (sender, receiver) = mpsc::sync_channel(CAPACITY);
    let thread = thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || write_lines(&receiver, output))?;
    let guard = WriterGuard {
        sender: sender.clone(),
        thread: Some(thread),
    };
    Ok((LineSender { sender }, guard))
}

/// Writes lines in batches until [`Message::Stop`] arrives or every sender is gone.
fn write_lines<W: Write>(receiver: &Receiver<Message>, mut output: W) {
    let mut batch = Vec::with_capacity(BATCH_CAPACITY);
    while let Ok(first) = receiver.recv() {
        let mut stop = false;
        match first {
            Message::Line(line) => {
                batch.extend_from_slice(&line);
                thread::sleep(GATHER);
            }
            Message::Stop => stop = true,
        }
        while let Ok(message) = receiver.try_recv() {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Stop => stop = true,
            }
        }
        // A log that cannot be written has nowhere to report the failure, so the lines are
        // dropped.
        let _ = output.write_all(&batch).and_then(|()| output.flush());
        batch.clear();
        batch.shrink_to(BATCH_CAPACITY);
        if stop {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        // After a failed send the thread has already stopped.
        if self.sender.send(Message::Stop).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// One line on its way to the writer thread. The subscriber writes each line whole, in
/// one `write` call, and the line is sent when the writer is dropped.
pub struct LineWriter<'a> {
    sender: &'a SyncSender<Message>,
    line: Vec<u8>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = Message::Line(std::mem::take(&mut self.line));
        // A full channel makes this thread wait for the writer. After the writer stopped, the
        // send fails at once, and a line sent while it stops is never written: either way the
        // line is lost.
        if let Err(TrySendError::Full(line)) = self.sender.try_send(line) {
            let _ = self.sender.send(line);
        }
    }
}

impl<'a> MakeWriter<'a> for LineSender {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            sender: &self.sender,
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An output that keeps what was written and counts the writes.
    #[derive(Clone, Default)]
    struct Recorded {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Recorded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            *self.writes.lock().unwrap() += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_line(sender: &LineSender, text: &str) {
        sender.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn guard_drop_writes_queued_lines_in_order() {
        let output = Recorded::default();
        let (sender, guard) = spawn(output.clone()).unwrap();
        for n in 0..1000 {
            log_line(&sender, &format!("line {n}\n"));
        }
        drop(guard);

        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            String::from_utf8(output.bytes.lock().unwrap().clone()).unwrap(),
            expected
        );
    }

    #[test]
    fn queued_lines_share_one_write() {
        let (sender, receiver) = mpsc::sync_channel(CAPACITY);
        for n in 0..100 {
            sender
                .send(Message::Line(format!("line {n}\n").into_bytes()))
                .unwrap();
        }
        sender.send(Message::Stop).unwrap();
        let output = Recorded::default();
        write_lines(&receiver, output.clone());

        assert_eq!(*output.writes.lock().unwrap(), 1);
        assert!(output.bytes.lock().unwrap().ends_with(b"line 99\n"));
    }

    #[test]
    fn line_after_stop_is_dropped() {
        let output = Recorded::default();
        let (sender, guard) = spawn(output.clone()).unwrap();
        drop(guard);

        // More lines than the channel holds: a send that waited for the stopped writer would
        // never return.
        let (done, finished) = mpsc::channel();
        thread::spawn(move || {
            for n in 0..CAPACITY + 10 {
                log_line(&sender, &format!("line {n}\n"));
            }
            done.send(()).unwrap();
        });

        assert!(
            finished.recv_timeout(Duration::from_secs(10)).is_ok(),
            "a send blocked"
        );
        assert!(output.bytes.lock().unwrap().is_empty());
    }
}
