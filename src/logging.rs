//! The `log` backend (BRIEF §5, issue 2 item 8): syslog through /dev/log (ident `proxyha`,
//! facility daemon), stderr, or a file.
//!
//! Stderr and file lines read `2024-05-01T12:34:56.789Z proxyha[1234]: INFO Entering MASTER STATE`:
//! UTC so that lines from nodes in different time zones sort together, milliseconds because
//! failovers happen within a second. Every event is one line written with one `write` call,
//! so lines from several threads never interleave and a test can read the file while we run.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::config::{LogTarget, io_reason};

/// The syslog socket (RFC 3164 datagrams).
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// The syslog ident and the process name in stderr and file lines.
pub const IDENT: &str = "proxyha";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "creating log directory {}: {}; create it or choose another log.target",
        path.display(), io_reason(source)
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "opening log file {}: {}; fix its permissions or choose another log.target",
        path.display(), io_reason(source)
    )]
    OpenFile { path: PathBuf, source: io::Error },
    #[error("logging is already set up; call logging::init once per process")]
    AlreadyInitialized,
}

/// Installs the process-wide logger for `target`, passing records up to `level`.
///
/// If /dev/log cannot be reached (no syslog daemon, e.g. in a container or a test
/// namespace), logs go to stderr and one warning line on stderr says so.
pub fn init(target: &LogTarget, level: LevelFilter) -> Result<(), LoggingError> {
    let (logger, warning) = Logger::open(target, level, Path::new(SYSLOG_SOCKET))?;
    log::set_boxed_logger(Box::new(logger)).map_err(|_| LoggingError::AlreadyInitialized)?;
    log::set_max_level(level);
    if let Some(warning) = warning {
        // Printed directly: the administrator must see it whatever the level.
        write_stderr(&format_line(
            SystemTime::now(),
            std::process::id(),
            Level::Warn,
            &warning,
        ));
    }
    Ok(())
}

/// The level a reload set (`LevelFilter as usize + 1`; 0: the one `init` was given).
static RELOADED_LEVEL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Changes the level of the installed logger (live reload of `log.level`).
pub fn set_level(level: LevelFilter) {
    RELOADED_LEVEL.store(level as usize + 1, std::sync::atomic::Ordering::Relaxed);
    log::set_max_level(level);
}

fn reloaded_level() -> Option<LevelFilter> {
    let n = RELOADED_LEVEL.load(std::sync::atomic::Ordering::Relaxed);
    LevelFilter::iter().find(|l| *l as usize + 1 == n)
}

/// One stderr/file line (without the newline) for a record at `level` logged at `now`.
pub fn format_line(now: SystemTime, pid: u32, level: Level, message: &str) -> String {
    let mut line = String::with_capacity(48 + message.len());
    push_timestamp(&mut line, now);
    let _ = write!(line, " {IDENT}[{pid}]: {level} ");
    push_one_line(&mut line, message);
    line
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC); times before 1970 print as the epoch.
fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `message` with line breaks escaped: one event, one line (BRIEF §5).
fn push_one_line(out: &mut String, message: &str) {
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn write_stderr(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    // Nothing sensible to do if stderr is gone.
    let _ = io::stderr().lock().write_all(buf.as_bytes());
}

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

enum Sink {
    Stderr,
    File(Mutex<File>),
    Syslog {
        socket: PathBuf,
        // A std Mutex: records are written synchronously, never held across an await.
        logger: Mutex<Syslog>,
    },
}

struct Logger {
    level: LevelFilter,
    pid: u32,
    sink: Sink,
}

impl Logger {
    /// The logger for `target`, and a warning to show if it had to fall back to stderr.
    fn open(
        target: &LogTarget,
        level: LevelFilter,
        syslog_socket: &Path,
    ) -> Result<(Logger, Option<String>), LoggingError> {
        let pid = std::process::id();
        let mut warning = None;
        let sink = match target {
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::File(path) => Sink::File(Mutex::new(open_file(path)?)),
            LogTarget::Syslog => match connect_syslog(syslog_socket, pid) {
                Ok(logger) => Sink::Syslog {
                    socket: syslog_socket.to_path_buf(),
                    logger: Mutex::new(logger),
                },
                Err(reason) => {
                    warning = Some(format!(
                        "syslog socket {} unavailable ({reason}); logging to stderr instead \
                         (start a syslog daemon or set log.target = \"stderr\")",
                        syslog_socket.display()
                    ));
                    Sink::Stderr
                }
            },
        };
        Ok((Logger { level, pid, sink }, warning))
    }
}

fn open_file(path: &Path) -> Result<File, LoggingError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LoggingError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| LoggingError::OpenFile {
            path: path.to_path_buf(),
            source,
        })
}

fn connect_syslog(socket: &Path, pid: u32) -> Result<Syslog, String> {
    let formatter = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: IDENT.to_string(),
        pid,
    };
    syslog::unix_custom(formatter, socket).map_err(|e| syslog_reason(&e))
}

/// The innermost reason of a syslog error, e.g. "No such file or directory".
fn syslog_reason(err: &syslog::Error) -> String {
    match err {
        syslog::Error::Initialization(inner) => match inner.downcast_ref::<syslog::Error>() {
            Some(inner) => syslog_reason(inner),
            None => inner.to_string(),
        },
        syslog::Error::Write(e) | syslog::Error::Io(e) => io_reason(e),
    }
}

fn send_syslog(logger: &mut Syslog, level: Level, message: &str) -> syslog::Result<()> {
    match level {
        Level::Error => logger.err(message),
        Level::Warn => logger.warning(message),
        Level::Info => logger.info(message),
        Level::Debug | Level::Trace => logger.debug(message),
    }
}

/// A poisoned lock only means another thread panicked mid-write; keep logging.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= reloaded_level().unwrap_or(self.level)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        match &self.sink {
            Sink::Stderr => write_stderr(&format_line(
                SystemTime::now(),
                self.pid,
                record.level(),
                &message,
            )),
            Sink::File(file) => {
                let mut line = format_line(SystemTime::now(), self.pid, record.level(), &message);
                line.push('\n');
                // An unbuffered File: one write(2) per line, visible to readers at once.
                let _ = lock(file).write_all(line.as_bytes());
            }
            Sink::Syslog { socket, logger } => {
                let mut one_line = String::with_capacity(message.len());
                push_one_line(&mut one_line, &message);
                let mut logger = lock(logger);
                if send_syslog(&mut logger, record.level(), &one_line).is_err() {
                    // The daemon restarted (the old socket is gone): reconnect once and retry;
                    // if that fails too the line is lost, as with syslog(3).
                    if let Ok(fresh) = connect_syslog(socket, self.pid) {
                        *logger = fresh;
                        let _ = send_syslog(&mut logger, record.level(), &one_line);
                    }
                }
            }
        }
    }

    fn flush(&self) {
        match &self.sink {
            Sink::Stderr => {
                let _ = io::stderr().flush();
            }
            Sink::File(file) => {
                let _ = lock(file).flush();
            }
            Sink::Syslog { logger, .. } => {
                let _ = lock(logger).backend.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("proxyha-logging-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn line_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_714_566_896_789);
        assert_eq!(
            format_line(t, 1234, Level::Info, "Entering MASTER STATE"),
            "2024-05-01T12:34:56.789Z proxyha[1234]: INFO Entering MASTER STATE"
        );
        assert_eq!(
            format_line(t, 7, Level::Warn, "two\nlines\r"),
            "2024-05-01T12:34:56.789Z proxyha[7]: WARN two\\nlines\\r"
        );
        assert_eq!(
            format_line(UNIX_EPOCH, 1, Level::Error, "x"),
            "1970-01-01T00:00:00.000Z proxyha[1]: ERROR x"
        );
        assert_eq!(
            format_line(UNIX_EPOCH - Duration::from_secs(5), 1, Level::Trace, "x"),
            "1970-01-01T00:00:00.000Z proxyha[1]: TRACE x"
        );
    }

    #[test]
    fn calendar() {
        let date = |secs: u64| {
            let mut s = String::new();
            push_timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(secs));
            s
        };
        assert_eq!(date(951_782_400), "2000-02-29T00:00:00.000Z"); // leap day of a 400-year
        assert_eq!(date(1_709_251_199), "2024-02-29T23:59:59.000Z");
        assert_eq!(date(4_107_542_400), "2100-03-01T00:00:00.000Z"); // 2100 is not leap
        assert_eq!(date(253_402_300_799), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn file_sink_appends_one_line_per_record_and_filters_levels() {
        let dir = scratch_dir("file");
        let path = dir.join("sub").join("proxyha.log");
        let target = LogTarget::File(path.clone());
        let (logger, warning) = match Logger::open(&target, LevelFilter::Info, Path::new("/none")) {
            Ok(opened) => opened,
            Err(e) => panic!("{e}"),
        };
        assert!(warning.is_none());
        logger.log(
            &Record::builder()
                .level(Level::Info)
                .args(format_args!("Entering BACKUP STATE"))
                .build(),
        );
        logger.log(
            &Record::builder()
                .level(Level::Debug)
                .args(format_args!("filtered"))
                .build(),
        );
        // Read while the logger is still open: no buffering in between.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let pid = std::process::id();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.ends_with(&format!(" proxyha[{pid}]: INFO Entering BACKUP STATE\n")),
            "{text:?}"
        );
        drop(logger);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_errors_name_the_path_and_the_fix() {
        let target = LogTarget::File("/proc/proxyha-test/x.log".into());
        let err = Logger::open(&target, LevelFilter::Info, Path::new("/none")).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("creating log directory /proc/proxyha-test: ")
                && text.ends_with("; create it or choose another log.target"),
            "{text}"
        );
    }

    #[test]
    fn syslog_datagrams_are_rfc3164_daemon_facility() {
        let dir = scratch_dir("syslog");
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("log");
        let server = match UnixDatagram::bind(&socket) {
            Ok(server) => server,
            Err(e) => panic!("binding {}: {e}", socket.display()),
        };
        let (logger, warning) = match Logger::open(&LogTarget::Syslog, LevelFilter::Debug, &socket)
        {
            Ok(opened) => opened,
            Err(e) => panic!("{e}"),
        };
        assert!(warning.is_none());
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .args(format_args!("Received higher prio advert"))
                .build(),
        );
        let mut buf = [0u8; 512];
        let _ = server.set_read_timeout(Some(Duration::from_secs(2)));
        let n = server.recv(&mut buf).unwrap_or(0);
        let datagram = String::from_utf8_lossy(&buf[..n]);
        // <PRI> = daemon (3) * 8 + warning (4) = 28.
        assert!(datagram.starts_with("<28>"), "{datagram}");
        let pid = std::process::id();
        assert!(
            datagram.ends_with(&format!(" proxyha[{pid}]: Received higher prio advert")),
            "{datagram}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_syslog_socket_falls_back_to_stderr_with_a_warning() {
        let socket = Path::new("/nonexistent/proxyha/log");
        let opened = Logger::open(&LogTarget::Syslog, LevelFilter::Info, socket);
        let Ok((logger, Some(warning))) = opened else {
            panic!("expected a fallback with a warning");
        };
        assert!(matches!(logger.sink, Sink::Stderr));
        assert_eq!(
            warning,
            "syslog socket /nonexistent/proxyha/log unavailable (No such file or directory); \
             logging to stderr instead (start a syslog daemon or set log.target = \"stderr\")"
        );
    }
}
