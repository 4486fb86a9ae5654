//! Instance output: split into bounded lines, kept in a bounded ring per service, and optionally
//! appended to one file per instance, rotated by size (`{file}.1` is the newest old one) with only
//! the last few kept. Files are created 0600 and directories 0700: output may hold secrets.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use super::{LogLine, LogStream};

/// Splits a byte stream into lines of at most `max` bytes. A longer line yields its first `max`
/// bytes, marked truncated, and the rest up to the next newline is dropped, so memory stays bounded
/// whatever the process writes.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max: usize,
    line: Vec<u8>,
    /// Inside an over-long line whose beginning was already emitted.
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            line: Vec::new(),
            skipping: false,
        }
    }

    /// Feeds bytes; `emit(line, truncated)` receives every complete line, without its `\n` or `\r\n`.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest) = match newline {
                Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
                None => (bytes, None),
            };
            if !self.skipping {
                let room = self.max - self.line.len();
                if chunk.len() > room {
                    self.line.extend_from_slice(&chunk[..room]);
                    emit(&self.line, true);
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            match rest {
                Some(rest) => {
                    if !self.skipping {
                        if self.line.last() == Some(&b'\r') {
                            self.line.pop();
                        }
                        emit(&self.line, false);
                        self.line.clear();
                    }
                    self.skipping = false;
                    bytes = rest;
                }
                None => break,
            }
        }
    }

    /// Ends the stream: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.skipping && !self.line.is_empty() {
            emit(&self.line, false);
        }
        self.line.clear();
        self.skipping = false;
    }
}

/// The last lines of one service's instances.
#[derive(Debug)]
pub(crate) struct LogRing {
    capacity: usize,
    lines: VecDeque<LogLine>,
}

impl LogRing {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lines: VecDeque::new(),
        }
    }

    pub fn push(&mut self, line: LogLine) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `limit` lines, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(limit);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// A service's ring by (namespace, service).
type Rings = HashMap<(String, String), Arc<Mutex<LogRing>>>;

/// Rings by service. A ring outlives its instances, so a crash's output stays readable.
#[derive(Debug)]
pub(crate) struct LogStore {
    capacity: usize,
    rings: Mutex<Rings>,
}

impl LogStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            rings: Mutex::default(),
        }
    }

    pub fn ring(&self, namespace: &str, service: &str) -> Arc<Mutex<LogRing>> {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings
            .entry((namespace.to_owned(), service.to_owned()))
            .or_insert_with(|| Arc::new(Mutex::new(LogRing::new(self.capacity))));
        Arc::clone(ring)
    }

    pub fn tail(&self, namespace: &str, service: &str, limit: usize) -> Vec<LogLine> {
        let ring = {
            let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
            match rings.get(&(namespace.to_owned(), service.to_owned())) {
                Some(ring) => Arc::clone(ring),
                None => return Vec::new(),
            }
        };
        let ring = ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.tail(limit)
    }
}

/// When an instance's log file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is rotated once it holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one (`.1` … `.{keep}`); 0 keeps none.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// One instance's log file, shared by its stdout and stderr pumps so that rotation moves both.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    /// `None` until the first write, and after a failure (output then stays in memory only).
    file: Option<tokio::fs::File>,
    written: u64,
    failed: bool,
}

impl LogFile {
    pub fn new(path: PathBuf, rotation: Rotation) -> Self {
        Self {
            path,
            rotation,
            file: None,
            written: 0,
            failed: false,
        }
    }

    /// Appends `text`, rotating first if the file would go past its size. Errors are logged once
    /// and the file given up.
    async fn write(&mut self, text: &[u8], instance: u64) {
        if self.failed || text.is_empty() {
            return;
        }
        let result = async {
            if self.file.is_some()
                && self.written > 0
                && self.written + text.len() as u64 > self.rotation.max_bytes
            {
                self.file = None;
                rotate(&self.path, self.rotation.keep).await?;
                self.written = 0;
            }
            if self.file.is_none() {
                let file = open_append(&self.path).await?;
                self.written = file.metadata().await?.len();
                self.file = Some(file);
            }
            let file = self.file.as_mut().expect("opened above");
            file.write_all(text).await?;
            file.flush().await?;
            self.written += text.len() as u64;
            std::io::Result::Ok(())
        };
        if let Err(error) = result.await {
            warn!(instance, path = %self.path.display(), %error, "Could not write an instance's log file; its output stays in memory only.");
            self.failed = true;
            self.file = None;
        }
    }
}

/// Shifts `{path}.{n}` to `{path}.{n+1}` (dropping what passes `keep`) and `path` to `{path}.1`.
async fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return tokio::fs::remove_file(path).await;
    }
    let _ = tokio::fs::remove_file(numbered(keep)).await;
    for n in (1..keep).rev() {
        match tokio::fs::rename(numbered(n), numbered(n + 1)).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    tokio::fs::rename(path, numbered(1)).await
}

/// Where one stream of one instance goes.
pub(crate) struct Sink {
    pub revision: Arc<str>,
    pub instance: u64,
    pub stream: LogStream,
    pub ring: Arc<Mutex<LogRing>>,
    pub file: Option<Arc<tokio::sync::Mutex<LogFile>>>,
    pub max_line: usize,
    /// Receives the last non-empty line, for the crash message.
    pub last_line: Option<Arc<Mutex<Option<String>>>>,
}

/// The file an instance's output is appended to: `<dir>/<namespace>/<service>/<revision>-<id>.log`.
pub(crate) fn file_path(
    dir: &Path,
    namespace: &str,
    service: &str,
    revision: &str,
    id: u64,
) -> PathBuf {
    dir.join(namespace)
        .join(service)
        .join(format!("{revision}-{id}.log"))
}

/// Reads one output stream to its end. Cancel safe: lines read so far are kept.
pub(crate) async fn pump(mut reader: impl AsyncRead + Unpin, sink: Sink) {
    let mut splitter = LineSplitter::new(sink.max_line);
    let mut buffer = vec![0u8; 8192];
    let mut formatted = String::new();
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        };
        let now = SystemTime::now();
        let mut lines = Vec::new();
        let mut emit = |bytes: &[u8], truncated: bool| {
            lines.push((String::from_utf8_lossy(bytes).into_owned(), truncated));
        };
        match read {
            Some(n) => splitter.push(&buffer[..n], &mut emit),
            None => splitter.finish(&mut emit),
        }
        if !lines.is_empty() {
            formatted.clear();
            record(&sink, now, lines, &mut formatted);
            if let Some(file) = &sink.file {
                file.lock()
                    .await
                    .write(formatted.as_bytes(), sink.instance)
                    .await;
            }
        }
        if read.is_none() {
            return;
        }
    }
}

fn record(sink: &Sink, now: SystemTime, lines: Vec<(String, bool)>, formatted: &mut String) {
    use std::fmt::Write;
    let stamp = rfc3339(now);
    if let Some(last) = &sink.last_line
        && let Some((text, _)) = lines.iter().rev().find(|(t, _)| !t.trim().is_empty())
    {
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.clone());
    }
    let mut ring = sink.ring.lock().unwrap_or_else(|e| e.into_inner());
    for (text, truncated) in lines {
        if sink.file.is_some() {
            let _ = writeln!(formatted, "{stamp} {} {text}", sink.stream);
        }
        ring.push(LogLine {
            revision: Arc::clone(&sink.revision),
            instance: sink.instance,
            stream: sink.stream,
            time: now,
            text,
            truncated,
        });
    }
}

/// `2024-05-01T12:34:56.789Z`: UTC with milliseconds, as log files usually carry.
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Opens `path` for appending, creating it 0600 and missing directories 0700.
async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(parent) = path.parent() {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut emit = |b: &[u8], t: bool| out.push((String::from_utf8_lossy(b).into_owned(), t));
        let mut s = LineSplitter::new(max);
        for chunk in chunks {
            s.push(chunk, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    fn owned(lines: &[(&str, bool)]) -> Vec<(String, bool)> {
        lines.iter().map(|(l, t)| (l.to_string(), *t)).collect()
    }

    #[test]
    fn splitter_table() {
        // Name, longest line, chunks read, lines expected.
        type Case<'a> = (&'a str, usize, &'a [&'a [u8]], &'a [(&'a str, bool)]);
        let cases: &[Case] = &[
            ("one line", 10, &[b"hello\n"], &[("hello", false)]),
            (
                "across chunks",
                10,
                &[b"he", b"llo\nwo", b"rld\n"],
                &[("hello", false), ("world", false)],
            ),
            ("crlf", 10, &[b"a\r\nb\r\n"], &[("a", false), ("b", false)]),
            (
                "no final newline",
                10,
                &[b"a\nb"],
                &[("a", false), ("b", false)],
            ),
            (
                "empty lines kept",
                10,
                &[b"\n\n"],
                &[("", false), ("", false)],
            ),
            ("exactly max", 3, &[b"abc\n"], &[("abc", false)]),
            (
                "too long",
                3,
                &[b"abcdef\nxy\n"],
                &[("abc", true), ("xy", false)],
            ),
            (
                "too long across chunks",
                3,
                &[b"ab", b"cd", b"ef", b"\nz"],
                &[("abc", true), ("z", false)],
            ),
            ("too long at the end", 3, &[b"abcdef"], &[("abc", true)]),
        ];
        for (name, max, chunks, want) in cases {
            assert_eq!(split(*max, chunks), owned(want), "{name}");
        }
    }

    #[test]
    fn timestamps_table() {
        use std::time::Duration;
        let at = |secs: u64, millis: u64| {
            rfc3339(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(at(1_234_567_890, 123), "2009-02-13T23:31:30.123Z");
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let store = LogStore::new(3);
        let ring = store.ring("ns", "svc");
        for i in 0..5 {
            ring.lock().unwrap().push(LogLine {
                revision: Arc::from("r"),
                instance: 1,
                stream: LogStream::Stdout,
                time: SystemTime::now(),
                text: i.to_string(),
                truncated: false,
            });
        }
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(texts(store.tail("ns", "svc", 10)), ["2", "3", "4"]);
        assert_eq!(texts(store.tail("ns", "svc", 2)), ["3", "4"]);
        assert!(store.tail("ns", "other", 10).is_empty());
    }

    #[tokio::test]
    async fn files_rotate_by_size_and_keep_the_last_few_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns/svc/rev-1.log");
        let rotation = Rotation {
            max_bytes: 10,
            keep: 2,
        };
        let mut file = LogFile::new(path.clone(), rotation);
        for line in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            file.write(line.as_bytes(), 1).await;
        }
        let read = |suffix: &str| {
            std::fs::read_to_string(format!("{}{suffix}", path.display())).unwrap_or_default()
        };
        assert_eq!(read(""), "dddddd\n");
        assert_eq!(read(".1"), "cccccc\n");
        assert_eq!(read(".2"), "bbbbbb\n");
        assert_eq!(read(".3"), "", "only two rotated files are kept");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(path.parent().unwrap().parent().unwrap()), 0o700);
    }

    proptest! {
        #[test]
        fn splitter_bounds_lines_and_keeps_short_ones(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..5),
            max in 1usize..20,
        ) {
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut from = 0;
            for p in points { chunks.push(&text[from..p]); from = p; }
            chunks.push(&text[from..]);
            let lines = split(max, &chunks);
            let whole = split(usize::MAX / 2, &[&text]);
            prop_assert_eq!(lines.len(), whole.len());
            for ((line, truncated), (full, _)) in lines.iter().zip(&whole) {
                prop_assert!(line.len() <= max);
                prop_assert_eq!(*truncated, full.len() > max);
                prop_assert!(full.starts_with(line.as_str()));
            }
        }
    }
}
