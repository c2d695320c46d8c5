//! Where a guest's stdout and stderr go, and why they cannot pass for the
//! host's own log.
//!
//! The host's stderr is its log: operators read it, and tests and log
//! shippers match lines in it. A guest is untrusted code, so what it prints
//! must never look like something the host said. With `--guest-output host`
//! (the default) every byte a guest writes, to its stdout or its stderr,
//! goes to the host's stderr through [`Lines`], which keeps these
//! invariants:
//!
//! - **Every guest line starts with `[component] `.** The host's own lines
//!   start otherwise: a timestamp (`tracing`), `host-bridge: `, `error: `,
//!   or `[N/M] ` (`--build`'s progress: a slash, which no component id
//!   has), so no guest line can be read as the host's. A newline from the
//!   guest ends its line; it cannot start a new, unprefixed one.
//! - **Nothing but printable text reaches the terminal.** Control
//!   characters (below 0x20, 0x7f and the C1 range 0x80–0x9f, among them
//!   ANSI's ESC and CSI), the Unicode line and paragraph separators, the
//!   bidirectional overrides, and bytes that are not UTF-8 are written as
//!   `\xNN` (one byte) or `\u{NNNN}` (one character). A backslash is written
//!   `\\`, so an escape a guest prints cannot be mistaken for one the host
//!   made.
//! - **Lines and volume are bounded.** A line keeps its first
//!   [`limits::LINE_BYTES`] bytes and says how many it lost; an instance's
//!   stream puts at most [`limits::INSTANCE_BYTES`] into the host's log, then
//!   the host logs once that the rest is dropped. Dropped bytes are counted
//!   (`host_bridge_guest_output_dropped_bytes_total`).
//! - **A guest that writes nothing pays nothing.** The line buffer is made
//!   on the guest's first use of the stream, not with the instance.
//!
//! A line is written whole, under the lock of the host's stderr, so it is
//! never interleaved with a host line. A partial last line is written when
//! the instance is dropped. With `--guest-output off` a guest's output is
//! discarded, and counted.
//!
//! The cap is per instance: a component with `instance_reuse` shares one
//! budget across the deliveries its instance serves.

use crate::broker::Metrics;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The bounds on what one guest instance may put in the host's log.
pub mod limits {
    /// The bytes of one guest line that are kept; the rest of the line is
    /// dropped and its length noted (`…[truncated N bytes]`).
    pub const LINE_BYTES: usize = 4 << 10;
    /// The bytes one instance's stdout (and, separately, its stderr) may
    /// write into the host's log, prefixes and escapes included.
    pub const INSTANCE_BYTES: usize = 64 << 10;
    /// The most bytes a guest is told it may write in one `wasi:io` write.
    pub const WRITE_PERMIT: usize = 64 << 10;
}

/// `--guest-output`: where guests' stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GuestOutput {
    /// The host's stderr, each line prefixed with `[component] ` and escaped.
    #[default]
    Host,
    /// Nowhere: discarded, and counted.
    Off,
}

/// Where rendered lines are written.
#[derive(Clone)]
enum Destination {
    HostStderr,
    #[cfg(test)]
    Captured(Arc<Mutex<String>>),
}

impl Destination {
    fn write(&self, rendered: &str) {
        match self {
            // One `write_all` under the lock: a guest line is never split by,
            // or spliced into, a host line. If the host's stderr is gone there
            // is nowhere to report it, and the guest is not to fail for it.
            Destination::HostStderr => {
                let _ =
                    std::io::Write::write_all(&mut std::io::stderr().lock(), rendered.as_bytes());
            }
            #[cfg(test)]
            Destination::Captured(out) => out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(rendered),
        }
    }
}

/// Which of the guest's streams.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One guest stream (stdout or stderr) of one instance, given to its
/// `WasiCtx`. Every handle the guest opens on the stream shares its
/// [`Lines`], made on first use.
pub(crate) struct GuestStdio {
    component: Arc<str>,
    stream: Stream,
    mode: GuestOutput,
    metrics: Arc<Metrics>,
    destination: Destination,
    lines: OnceLock<Arc<Mutex<Lines>>>,
}

impl GuestStdio {
    pub(crate) fn new(
        component: &Arc<str>,
        stream: Stream,
        mode: GuestOutput,
        metrics: &Arc<Metrics>,
    ) -> GuestStdio {
        GuestStdio {
            component: component.clone(),
            stream,
            mode,
            metrics: metrics.clone(),
            destination: Destination::HostStderr,
            lines: OnceLock::new(),
        }
    }

    fn writer(&self) -> Writer {
        match self.mode {
            GuestOutput::Off => Writer::Discard(self.metrics.clone()),
            GuestOutput::Host => Writer::Lines(
                self.lines
                    .get_or_init(|| {
                        Arc::new(Mutex::new(Lines::new(
                            &self.component,
                            self.stream,
                            self.metrics.clone(),
                            self.destination.clone(),
                        )))
                    })
                    .clone(),
            ),
        }
    }
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

/// A handle on a guest stream: WASI 0.2's `output-stream` and the
/// `AsyncWrite` WASI 0.3's streams are written into. Writes never block and
/// never fail: the guest's output is the host's to bound, not the guest's
/// to wait on.
enum Writer {
    Lines(Arc<Mutex<Lines>>),
    Discard(Arc<Metrics>),
}

impl Writer {
    fn write_bytes(&self, bytes: &[u8]) {
        match self {
            Writer::Lines(lines) => lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write(bytes),
            Writer::Discard(metrics) => add(&metrics.guest_output_dropped_off, bytes.len()),
        }
    }
}

impl OutputStream for Writer {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    /// A partial line stays buffered: WASI's blocking write flushes after
    /// every write, and one `eprintln!` can be several writes.
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(limits::WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn add(counter: &AtomicU64, bytes: usize) {
    counter.fetch_add(bytes as u64, Relaxed);
}

/// One instance's stream, cut into lines, escaped, prefixed and bounded
/// (see the module's docs). Dropping it writes the partial last line.
struct Lines {
    component: Arc<str>,
    stream: Stream,
    /// `[component] `, escaped.
    prefix: String,
    /// The current line's first bytes, at most [`limits::LINE_BYTES`].
    partial: Vec<u8>,
    /// How many bytes of the current line were past [`limits::LINE_BYTES`].
    cut: usize,
    /// Bytes written to the destination so far, at most
    /// [`limits::INSTANCE_BYTES`].
    logged: usize,
    /// Set once the next line would have passed [`limits::INSTANCE_BYTES`]:
    /// from then on everything is dropped.
    over: bool,
    /// Lines rendered by the current write, written out together.
    rendered: String,
    metrics: Arc<Metrics>,
    destination: Destination,
}

impl Lines {
    fn new(
        component: &Arc<str>,
        stream: Stream,
        metrics: Arc<Metrics>,
        destination: Destination,
    ) -> Lines {
        let mut prefix = String::from("[");
        escape_into(&mut prefix, component.as_bytes());
        prefix.push_str("] ");
        Lines {
            component: component.clone(),
            stream,
            prefix,
            partial: Vec::new(),
            cut: 0,
            logged: 0,
            over: false,
            rendered: String::new(),
            metrics,
            destination,
        }
    }

    /// Takes `bytes` as the guest wrote them, and writes out the lines they
    /// complete.
    fn write(&mut self, mut bytes: &[u8]) {
        while !self.over {
            let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                self.append(bytes);
                bytes = &[];
                break;
            };
            self.append(&bytes[..end]);
            self.end_line();
            bytes = &bytes[end + 1..];
        }
        if self.over {
            add(&self.metrics.guest_output_dropped_volume, bytes.len());
        }
        self.write_out();
    }

    fn append(&mut self, part: &[u8]) {
        let room = limits::LINE_BYTES - self.partial.len();
        let kept = room.min(part.len());
        self.partial.extend_from_slice(&part[..kept]);
        self.cut += part.len() - kept;
    }

    /// Renders the current line into `rendered`, if the instance's budget
    /// has room for it.
    fn end_line(&mut self) {
        // A CRLF line ending ends the line like LF does.
        if self.cut == 0 && self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let start = self.rendered.len();
        render_line(&mut self.rendered, &self.prefix, &self.partial, self.cut);
        let length = self.rendered.len() - start;
        if self.logged + length > limits::INSTANCE_BYTES {
            self.rendered.truncate(start);
            self.over = true;
            // The lines before this one are logged before the warning, so
            // the log reads in the order the guest wrote.
            self.write_out();
            add(
                &self.metrics.guest_output_dropped_volume,
                self.partial.len() + self.cut + 1,
            );
            tracing::warn!(
                component = %self.component,
                "the guest's {} is over {} KiB for this instance; the rest of it is dropped",
                match self.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                },
                limits::INSTANCE_BYTES >> 10,
            );
        } else {
            self.logged += length;
            add(&self.metrics.guest_output_dropped_line, self.cut);
        }
        self.partial.clear();
        self.cut = 0;
    }

    fn write_out(&mut self) {
        if !self.rendered.is_empty() {
            self.destination.write(&self.rendered);
            self.rendered.clear();
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.over && (!self.partial.is_empty() || self.cut > 0) {
            self.end_line();
            self.write_out();
        }
    }
}

/// Appends `prefix`, `line` escaped, the note of `cut` bytes dropped if any,
/// and a newline to `out`.
fn render_line(out: &mut String, prefix: &str, line: &[u8], cut: usize) {
    out.push_str(prefix);
    escape_into(out, line);
    if cut > 0 {
        let _ = write!(out, "…[truncated {cut} bytes]");
    }
    out.push('\n');
}

/// Appends `bytes` to `out` with everything that could move the cursor,
/// restyle the terminal, reorder the text or fake an escape written as an
/// escape (see the module's docs).
fn escape_into(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\0'..='\x1f' | '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if needs_escape(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        // Not UTF-8: bytes from 0x80 up, so they never read as a control
        // character's `\xNN` (all below 0x80).
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Characters past ASCII that a terminal or a log viewer acts on: the C1
/// controls (0x9b is CSI), the line and paragraph separators, and the
/// bidirectional marks, embeddings, overrides and isolates.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest's stream whose lines are captured, and the capture.
    fn captured(mode: GuestOutput) -> (GuestStdio, Arc<Mutex<String>>, Arc<Metrics>) {
        let out = Arc::new(Mutex::new(String::new()));
        let metrics = Arc::new(Metrics::default());
        let mut stdio = GuestStdio::new(&"guest".into(), Stream::Stderr, mode, &metrics);
        stdio.destination = Destination::Captured(out.clone());
        (stdio, out, metrics)
    }

    /// One `wasi:io` write, as a guest makes it.
    fn put(writer: &mut Box<dyn OutputStream>, bytes: &[u8]) {
        writer
            .write(bytes::Bytes::copy_from_slice(bytes))
            .expect("a guest's write never fails");
    }

    fn text(out: &Arc<Mutex<String>>) -> String {
        out.lock().unwrap().clone()
    }

    /// What the host's log holds after a guest wrote `writes`, one write
    /// each, and its instance was dropped.
    fn logged(writes: &[&[u8]]) -> String {
        let (stdio, out, _) = captured(GuestOutput::Host);
        let mut writer = stdio.p2_stream();
        for bytes in writes {
            put(&mut writer, bytes);
        }
        drop(writer);
        drop(stdio);
        text(&out)
    }

    #[test]
    fn every_line_is_prefixed_with_the_component() {
        assert_eq!(
            logged(&[b"one\ntwo\n"]),
            "[guest] one\n[guest] two\n",
            "a newline ends a guest line; it cannot start an unprefixed one"
        );
        assert_eq!(
            logged(&[b"host-bridge: app `x` is ready on http://127.0.0.1:3000\n"]),
            "[guest] host-bridge: app `x` is ready on http://127.0.0.1:3000\n"
        );
        assert_eq!(logged(&[b"\n"]), "[guest] \n");
    }

    #[test]
    fn a_line_written_in_pieces_is_one_line() {
        assert_eq!(
            logged(&[b"order ", b"42", b": saved\nnext"]),
            "[guest] order 42: saved\n[guest] next\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        // ESC starts ANSI sequences; \r would move the cursor back over
        // the prefix; \0 and DEL confuse log tools.
        assert_eq!(
            logged(&[b"\x1b[31mred\x1b[0m\rover\0\x7f\ttab\n"]),
            "[guest] \\x1b[31mred\\x1b[0m\\x0dover\\x00\\x7f\\x09tab\n"
        );
        // CSI as one character (C1), the line separator and a bidi override.
        assert_eq!(
            logged(&["\u{9b}31m \u{2028} \u{202e}abc\n".as_bytes()]),
            "[guest] \\u{9b}31m \\u{2028} \\u{202e}abc\n"
        );
        // Other text passes as written.
        assert_eq!(logged(&["café ✓\n".as_bytes()]), "[guest] café ✓\n");
    }

    #[test]
    fn crlf_ends_a_line_but_a_lone_cr_is_escaped() {
        assert_eq!(logged(&[b"a\r\nb\rc\n"]), "[guest] a\n[guest] b\\x0dc\n");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped() {
        assert_eq!(
            logged(&[b"ok \xff\xfe \xe2\x82 end\n"]),
            "[guest] ok \\xff\\xfe \\xe2\\x82 end\n"
        );
    }

    #[test]
    fn a_backslash_is_escaped_so_an_escape_cannot_be_forged() {
        // The guest prints the four characters `\x1b` and a real ESC: the
        // two must come out different.
        assert_eq!(logged(&[b"\\x1b \x1b\n"]), "[guest] \\\\x1b \\x1b\n");
    }

    #[test]
    fn a_long_line_is_cut_and_says_how_much_was_lost() {
        let mut line = vec![b'a'; limits::LINE_BYTES + 10];
        line.push(b'\n');
        let (stdio, out, metrics) = captured(GuestOutput::Host);
        let mut writer = stdio.p2_stream();
        // In two writes, so the cut spans them.
        let (first, second) = line.split_at(100);
        put(&mut writer, first);
        put(&mut writer, second);
        put(&mut writer, b"short\n");
        let expected = format!(
            "[guest] {}…[truncated 10 bytes]\n[guest] short\n",
            "a".repeat(limits::LINE_BYTES)
        );
        assert_eq!(text(&out), expected);
        assert_eq!(metrics.guest_output_dropped_line.load(Relaxed), 10);
    }

    #[test]
    fn an_instance_output_is_capped_then_dropped_and_counted() {
        let (stdio, out, metrics) = captured(GuestOutput::Host);
        let mut writer = stdio.p2_stream();
        // 100-byte lines: "[guest] " + 91 bytes + "\n".
        let line = format!("{}\n", "x".repeat(91));
        let fit = limits::INSTANCE_BYTES / line.len().saturating_add(8);
        for _ in 0..fit {
            put(&mut writer, line.as_bytes());
        }
        let logged_before = text(&out).len();
        assert_eq!(logged_before, fit * 100);
        // Past the cap, nothing more is logged, a partial line included.
        for _ in 0..1000 {
            put(&mut writer, line.as_bytes());
        }
        put(&mut writer, b"tail");
        drop(writer);
        drop(stdio);
        let logged = text(&out);
        assert!(logged.len() <= limits::INSTANCE_BYTES, "{}", logged.len());
        assert!(logged.lines().all(|l| l.starts_with("[guest] ")));
        let dropped = metrics.guest_output_dropped_volume.load(Relaxed) as usize;
        assert_eq!(
            dropped + logged.len() - 8 * logged.lines().count(),
            (fit + 1000) * 92 + 4,
            "every byte the guest wrote was logged or counted as dropped"
        );
    }

    #[test]
    fn a_partial_last_line_is_written_when_the_instance_is_dropped() {
        let (stdio, out, _) = captured(GuestOutput::Host);
        let mut writer = stdio.p2_stream();
        put(&mut writer, b"no newline");
        writer.flush().unwrap();
        assert_eq!(text(&out), "", "a flush does not end a line");
        drop(writer);
        assert_eq!(text(&out), "", "the stream is still open in the instance");
        drop(stdio);
        assert_eq!(text(&out), "[guest] no newline\n");
    }

    #[test]
    fn every_handle_on_a_stream_shares_its_lines() {
        let (stdio, out, _) = captured(GuestOutput::Host);
        let mut first = stdio.p2_stream();
        let mut second = stdio.p2_stream();
        put(&mut first, b"half ");
        put(&mut second, b"and half\n");
        assert_eq!(text(&out), "[guest] half and half\n");
    }

    #[tokio::test]
    async fn wasi_03_streams_go_through_the_same_lines() {
        use tokio::io::AsyncWriteExt;
        let (stdio, out, _) = captured(GuestOutput::Host);
        let mut writer = Pin::from(stdio.async_stream());
        writer.write_all(b"p3 \x1b[2J\n").await.unwrap();
        assert_eq!(text(&out), "[guest] p3 \\x1b[2J\n");
    }

    #[test]
    fn off_discards_and_counts() {
        let (stdio, out, metrics) = captured(GuestOutput::Off);
        let mut writer = stdio.p2_stream();
        put(&mut writer, b"host-bridge: forged\n");
        drop(writer);
        drop(stdio);
        assert_eq!(text(&out), "");
        assert_eq!(metrics.guest_output_dropped_off.load(Relaxed), 20);
    }

    #[test]
    fn a_stream_the_guest_never_uses_has_no_buffer() {
        let (stdio, _, _) = captured(GuestOutput::Host);
        assert!(stdio.lines.get().is_none());
    }
}
