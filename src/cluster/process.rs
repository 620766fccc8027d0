//! The only place that starts processes.
//!
//! Commands are argument vectors, never shell strings, so pool, image and path names reach `rbd`
//! exactly as written. A failed command becomes a [`CommandError`] whose one-line message is the
//! child's own last words and its exit status (`tar: … (tar exit status 2)`); the full command
//! line, a few hundred characters of options, goes to the debug log (`-v`), where every command's
//! end is logged with its duration and its stderr. Only a command that carries an [`Interpreter`]
//! of its program's failures has them read further: `rbd`'s ([`super::ceph`]) restate the usual
//! causes (`pool 'rbd' does not exist`), type the errno of its exit status, name the cephx user
//! of a refused login, and can stop a stream at its first timed-out operation rather than after
//! every other one in flight has timed out too. Nobody else's exit status is read as an errno.
//! A child's stderr is drained on its own thread so that a chatty child can never block on a full
//! pipe while we are reading its stdout.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use tracing::debug;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How much of a bounded command's output is read back ([`CommandLine::run_within`]).
const OUTPUT_BYTES: u64 = 64 * 1024;

/// How long a command stopped at its deadline has to end before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// How far back before newly read stderr [`Interpreter::stalled`] is asked to look, so that a
/// phrase straddling two reads is still seen whole.
const STALL_LOOKBACK_BYTES: usize = 256;

/// How one program's failures are read, for the commands that run it (set with
/// [`CommandLine::interpreted_by`]). Without one, a failure is the child's own words and its exit
/// status, and its kind is [`FailureKind::Other`]: an exit status means nothing more than
/// "failed" until someone who knows the program says so.
pub trait Interpreter: fmt::Debug + Send + Sync {
    /// What a failure exit means.
    fn kind(&self, status: ExitStatus, stderr: &[u8]) -> FailureKind;
    /// The cause an administrator acts on, when the failure is one this program is known for;
    /// `None` leaves the child's own words ([`Interpreter::summary`]).
    fn cause(&self, status: ExitStatus, stderr: &[u8]) -> Option<String>;
    /// The child's stderr as one line, what matters of it only.
    fn summary(&self, stderr: &[u8]) -> String;
    /// True when `stderr` (its newest part) says the child's failure is already certain, though
    /// it would go on waiting (see [`CommandLine::stop_on_timeout`]).
    fn stalled(&self, stderr: &[u8]) -> bool;
}

/// What a failed command's exit status says happened, as far as its [`Interpreter`] knows: the
/// kinds the callers tell apart, named after the errno `rbd` exits with for each
/// ([`super::ceph`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// ENOENT: no such pool, image or snapshot.
    NotFound,
    /// EEXIST: the snapshot or image exists already.
    AlreadyExists,
    /// EBUSY: the image has watchers, or the snapshot is protected.
    Busy,
    /// ETIMEDOUT: the cluster did not answer in time (or could not be reached at all).
    TimedOut,
    /// EACCES: the cephx user may not do this.
    PermissionDenied,
    /// The cluster refused the login (unknown user, wrong key, no keyring): every later call
    /// would fail the same way.
    Unauthenticated,
    /// EDQUOT: the image has as many snapshots as its snapshot limit allows.
    QuotaExceeded,
    /// Anything else, and every failure of a command without an [`Interpreter`].
    Other,
}

/// Descriptors the children of a thread inherit, with that thread ([`inherit_on_this_thread`]).
static INHERITED: Mutex<Vec<(ThreadId, RawFd)>> = Mutex::new(Vec::new());

fn inherited() -> std::sync::MutexGuard<'static, Vec<(ThreadId, RawFd)>> {
    INHERITED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lets the children this thread starts inherit `fd` (every descriptor of ours is otherwise
/// closed on exec) until the guard is dropped. Only this thread's: an image's lock goes to its
/// own `rbd` processes, not to those another image starts at the same time, which would hold it
/// past its run.
pub fn inherit_on_this_thread(fd: BorrowedFd<'_>) -> Inherited {
    let fd = fd.as_raw_fd();
    inherited().push((std::thread::current().id(), fd));
    Inherited { fd }
}

/// Ends [`inherit_on_this_thread`] when dropped (on any thread); drop it before the descriptor
/// is closed.
#[derive(Debug)]
pub struct Inherited {
    fd: RawFd,
}

impl Drop for Inherited {
    fn drop(&mut self) {
        inherited().retain(|&(_, fd)| fd != self.fd);
    }
}

/// Process ids of the children running now, so an interrupted run can stop them.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn track(child: &Child) {
    running().push(child.id());
}

fn untrack(child: &Child) {
    running().retain(|&pid| pid != child.id());
}

/// Waits for a registered child to exit and reaps it. The child is taken off the list after it
/// exited but before it is reaped: until reaped its pid stays its own, so a signal sent by
/// [`terminate_children`] meanwhile can never reach another process that reused the pid.
fn wait_and_untrack(child: &mut Child) -> io::Result<ExitStatus> {
    use rustix::process::{WaitId, WaitIdOptions};
    // A child's pid is positive and fits an i32; anything else goes straight to `child.wait()`.
    if let Some(pid) = pid_of(child.id()) {
        loop {
            // WNOWAIT leaves the child unreaped.
            let waited = rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            );
            match waited {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => {
                    untrack(child);
                    return Err(io::Error::from(errno));
                }
            }
        }
    }
    untrack(child);
    child.wait()
}

/// Asks every running child to stop (SIGTERM). Their readers then see the stream end and the
/// failure exit, and the usual error paths clean up; children started afterwards (the clean-up's
/// own commands) are not affected.
pub fn terminate_children() {
    for &pid in running().iter() {
        // The pid is one of our children that has not been reaped yet (children leave the list
        // before they are reaped, see `wait_and_untrack`), so it cannot have been reused.
        if let Some(pid) = pid_of(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// A child's id as the system calls take it; `None` for ids no process can have (0, or above
/// `i32::MAX`), which are never signalled.
fn pid_of(id: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(id).ok()?)
}

/// A program and its arguments.
#[derive(Debug, Clone)]
pub struct CommandLine {
    program: OsString,
    args: Vec<OsString>,
    /// Who reads the program's failures; `None` reports them as the child said them.
    interpreter: Option<Arc<dyn Interpreter>>,
    /// Stop the child as soon as its interpreter reads in its stderr that an operation timed out
    /// (see [`CommandLine::stop_on_timeout`]).
    stop_on_timeout: bool,
    /// Added to the child's environment.
    envs: Vec<(OsString, OsString)>,
    /// The child is meant to go on after this process ends ([`CommandLine::spawn_detached`]).
    detached: bool,
}

impl CommandLine {
    pub fn new(program: impl Into<OsString>) -> CommandLine {
        CommandLine {
            program: program.into(),
            args: Vec::new(),
            interpreter: None,
            stop_on_timeout: false,
            envs: Vec::new(),
            detached: false,
        }
    }

    /// Adds `key=value` to the child's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> CommandLine {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Has the program's failures read by `interpreter` (`rbd`'s by [`super::ceph`]).
    pub fn interpreted_by(mut self, interpreter: Arc<dyn Interpreter>) -> CommandLine {
        self.interpreter = Some(interpreter);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> CommandLine {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> CommandLine
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// For a stream that fails on its first failed operation (`rbd export`): once the child
    /// logs that an operation timed out, its end is certain, but it would still wait for every
    /// other operation in flight to time out too (another whole timeout); it is stopped at once
    /// and its failure reads as the timeout it is. Only its [`Interpreter`] can tell: a command
    /// without one is never stopped.
    pub fn stop_on_timeout(mut self, stop: bool) -> CommandLine {
        self.stop_on_timeout = stop;
        self
    }

    /// Runs the command to completion and returns its stdout.
    pub fn output(&self) -> Result<Vec<u8>, CommandError> {
        let mut reader = self.spawn_reader()?;
        let mut stdout = Vec::new();
        match reader.read_to_end(&mut stdout) {
            Ok(_) => Ok(stdout),
            Err(err) => Err(CommandError::from_io(self, err)),
        }
    }

    /// Runs the command, discarding its stdout.
    pub fn run(&self) -> Result<(), CommandError> {
        self.output().map(drop)
    }

    /// The process to start. If we die without cleaning up (SIGKILL), the kernel sends the child
    /// SIGTERM, so no `rbd` of a dead run goes on changing the cluster behind the next run's back.
    fn command(&self) -> Command {
        #[allow(clippy::disallowed_methods)] // this is the one door
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.envs.iter().map(|(key, value)| (key, value)));
        let this_thread = std::thread::current().id();
        let inherited: Vec<RawFd> = (inherited().iter())
            .filter(|(thread, _)| *thread == this_thread)
            .map(|&(_, fd)| fd)
            .collect();
        // The one `unsafe` of the crate: `pre_exec` is unsafe because its closure runs in the
        // child between fork and exec, where only async-signal-safe calls are allowed. Ours only
        // makes the prctl(2) and fcntl(2) system calls (no allocation, no lock; it reads the
        // list made before the fork), and std offers no safe way to ask for a parent-death
        // signal or to pass one descriptor to one child.
        // SAFETY: see above; each descriptor in `inherited` stays open while its guard lives
        // ([`Inherited`]), and this thread is the one starting the child.
        #[allow(unsafe_code)]
        unsafe {
            let detached = self.detached;
            command.pre_exec(move || {
                if !detached {
                    rustix::process::set_parent_process_death_signal(Some(
                        rustix::process::Signal::TERM,
                    ))?;
                }
                for &fd in &inherited {
                    rustix::io::fcntl_setfd(
                        BorrowedFd::borrow_raw(fd),
                        rustix::io::FdFlags::empty(),
                    )?;
                }
                Ok(())
            });
        }
        command
    }

    /// Starts the command to go on after this process ends (`mount --daemon`): in a process
    /// group of its own (no terminal's Ctrl-C reaches it), stdin and stdout on /dev/null, its
    /// stderr a pipe to us (until it lets go of it); neither stopped with our children nor when
    /// we exit.
    pub fn spawn_detached(&self) -> Result<Child, CommandError> {
        debug!("starting {self} detached");
        let mut detached = self.clone();
        detached.detached = true;
        let mut command = detached.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|err| CommandError::new(self, Failure::Spawn(err)))
    }

    /// Starts the child, registers it for [`terminate_children`] and drains its stderr on a
    /// thread whose result is the stderr tail.
    fn start(
        &self,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<(Child, JoinHandle<Vec<u8>>), CommandError> {
        debug!("running {self}");
        let mut child = self
            .command()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| CommandError::new(self, Failure::Spawn(err)))?;
        track(&child);
        let stderr = child.stderr.take().expect("stderr is piped");
        let stop = match (&self.interpreter, self.stop_on_timeout) {
            (Some(interpreter), true) => Some((child.id(), Arc::clone(interpreter))),
            _ => None,
        };
        Ok((
            child,
            std::thread::spawn(move || drain_stderr(stderr, stop)),
        ))
    }

    /// Runs the command with `input` streamed to its stdin, discarding its stdout. If the child
    /// stops reading early, its own failure is reported rather than the broken pipe.
    pub fn run_with_input(&self, input: &mut dyn Read) -> Result<(), CommandError> {
        let started = Instant::now();
        let result = self.feed(input);
        log_end(&self.to_string(), started.elapsed(), result.as_ref().err());
        result
    }

    fn feed(&self, input: &mut dyn Read) -> Result<(), CommandError> {
        let (mut child, stderr_tail) = self.start(Stdio::piped(), Stdio::null())?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let copied = io::copy(input, &mut stdin);
        drop(stdin);
        let status = wait_and_untrack(&mut child);
        let stderr = stderr_tail.join().unwrap_or_default();
        let status = status.map_err(|err| CommandError::new(self, Failure::Read(err)))?;
        if !status.success() {
            return Err(CommandError::new(self, Failure::Exit { status, stderr }));
        }
        match copied {
            Ok(_) => Ok(()),
            Err(err) => Err(CommandError::new(self, Failure::Input(err))),
        }
    }

    /// Runs the command to its end, stopping it (SIGTERM, then SIGKILL [`GRACE`] later) once
    /// `limit` has passed, and returns what it wrote (stdout and stderr, at most
    /// [`OUTPUT_BYTES`]). Its output goes to a file, never a pipe: a command that leaves a
    /// process of its own behind holding its output (an admin's hook) cannot keep us waiting.
    pub fn run_within(&self, limit: Duration) -> Result<Vec<u8>, CommandError> {
        let started = Instant::now();
        let result = self.run_bounded(limit);
        log_end(&self.to_string(), started.elapsed(), result.as_ref().err());
        result
    }

    fn run_bounded(&self, limit: Duration) -> Result<Vec<u8>, CommandError> {
        let spawn_failed = |err| CommandError::new(self, Failure::Spawn(err));
        let output = tempfile::tempfile().map_err(spawn_failed)?;
        // A group of its own, so that stopping it stops whatever it started too.
        let mut child = self
            .command()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(spawn_failed)?)
            .stderr(output.try_clone().map_err(spawn_failed)?)
            .spawn()
            .map_err(spawn_failed)?;
        track(&child);
        let (finished, watch) = std::sync::mpsc::channel::<()>();
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            use std::sync::mpsc::RecvTimeoutError::Timeout;
            if watch.recv_timeout(limit) != Err(Timeout) {
                return false;
            }
            signal_group(pid, rustix::process::Signal::TERM);
            if watch.recv_timeout(GRACE) == Err(Timeout) {
                signal_group(pid, rustix::process::Signal::KILL);
            }
            true
        });
        let status = wait_and_untrack(&mut child);
        drop(finished);
        let stopped = watchdog.join().unwrap_or(false);
        let mut said = Vec::new();
        let mut output = output;
        let _ = io::Seek::rewind(&mut output)
            .and_then(|()| output.take(OUTPUT_BYTES).read_to_end(&mut said));
        let status = status.map_err(|err| CommandError::new(self, Failure::Read(err)))?;
        if stopped {
            return Err(CommandError::new(self, Failure::Deadline(limit)));
        }
        if !status.success() {
            return Err(CommandError::new(
                self,
                Failure::Exit {
                    status,
                    stderr: said,
                },
            ));
        }
        Ok(said)
    }

    /// Starts the command with its stdout available as a stream. Reading to the end also waits
    /// for the child; a failure exit then surfaces as a read error wrapping a [`CommandError`].
    pub fn spawn_reader(&self) -> Result<ChildReader, CommandError> {
        let started = Instant::now();
        let (mut child, stderr_tail) = self
            .start(Stdio::null(), Stdio::piped())
            .map_err(|err| self.ended(started, err))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(ChildReader {
            started,
            command: self.clone(),
            child,
            stdout: Some(stdout),
            stderr_tail: Some(stderr_tail),
            finished: false,
        })
    }
}

impl CommandLine {
    /// The error this command gives when it exits with `code` after writing `stderr`, read as
    /// its own failure would be (by its interpreter, if it has one).
    #[cfg(test)]
    pub(crate) fn failure(&self, code: i32, stderr: &str) -> CommandError {
        use std::os::unix::process::ExitStatusExt;
        let status = ExitStatus::from_raw((code & 0xff) << 8);
        let stderr = stderr.as_bytes().to_vec();
        CommandError::new(self, Failure::Exit { status, stderr })
    }

    /// Logs a command that could not even start; returns its error.
    fn ended(&self, started: Instant, err: CommandError) -> CommandError {
        log_end(&self.to_string(), started.elapsed(), Some(&err));
        err
    }
}

/// The debug line that closes every command: its full argv (shell-quoted), how long it took, and
/// how it ended. This is where the command line of a failure is found (`-v`).
fn log_end(command: &str, took: Duration, failure: Option<&CommandError>) {
    let seconds = took.as_secs_f64();
    match failure {
        None => debug!("finished in {seconds:.3} s: {command}"),
        Some(err) => {
            debug!("failed after {seconds:.3} s ({err}): {command}");
            // The error keeps only the cause; the child's own words, Ceph's log lines
            // included, are for whoever debugs.
            if let Some(said) = err.stderr().filter(|said| !said.trim().is_empty()) {
                debug!("its stderr: {}", said.trim().replace('\n', " / "));
            }
        }
    }
}

impl fmt::Display for CommandLine {
    /// Shell-quoted, for people to read and copy; it is never given to a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| w.to_string_lossy());
        f.write_str(&shell_words::join(words))
    }
}

/// Reads a child's stderr to its end and returns the tail. With `stop`, the child of that pid
/// is stopped (SIGTERM) the first time the interpreter reads in its stderr that it stalled.
fn drain_stderr(mut stderr: impl Read, mut stop: Option<(u32, Arc<dyn Interpreter>)>) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[..n]);
        // The phrase may straddle two reads: look back a little before the new bytes.
        let from = tail.len().saturating_sub(n + STALL_LOOKBACK_BYTES);
        if let Some((pid, interpreter)) = &stop {
            if interpreter.stalled(&tail[from..]) {
                debug!("stopping process {pid}: an operation timed out");
                stop_child(*pid);
                stop = None;
            }
        }
        if tail.len() > 2 * STDERR_TAIL_BYTES {
            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        }
    }
    tail
}

/// Sends SIGTERM to a child still running: the list lock is held while signalling, and a child
/// leaves the list before it is reaped, so the pid cannot have been reused.
fn stop_child(pid: u32) {
    let running = running();
    if let (true, Some(pid)) = (running.contains(&pid), pid_of(pid)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Sends `signal` to the process group a child still running leads (see [`stop_child`]).
fn signal_group(pid: u32, signal: rustix::process::Signal) {
    let running = running();
    if let (true, Some(pid)) = (running.contains(&pid), pid_of(pid)) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// The stdout of a running child. Dropping it before the end kills the child.
pub struct ChildReader {
    started: Instant,
    command: CommandLine,
    child: Child,
    stdout: Option<ChildStdout>,
    stderr_tail: Option<JoinHandle<Vec<u8>>>,
    finished: bool,
}

impl ChildReader {
    fn collect_stderr(&mut self) -> Vec<u8> {
        self.stderr_tail
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    /// Waits for the child after its stdout ended and turns a failure exit into an error.
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        drop(self.stdout.take());
        let status = wait_and_untrack(&mut self.child);
        let status = status?;
        let stderr = self.collect_stderr();
        let took = self.started.elapsed();
        if status.success() {
            log_end(&self.command.to_string(), took, None);
            return Ok(());
        }
        let err = CommandError::new(&self.command, Failure::Exit { status, stderr });
        log_end(&self.command.to_string(), took, Some(&err));
        Err(io::Error::other(err))
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let stdout = self.stdout.as_mut().expect("stdout present until finished");
        let n = stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.finished {
            // Nobody will read the rest; make sure the child does not outlive us.
            let _ = self.child.kill();
            let _ = wait_and_untrack(&mut self.child);
            let _ = self.collect_stderr();
            debug!(
                "abandoned after {:.3} s: {}",
                self.started.elapsed().as_secs_f64(),
                self.command
            );
        }
    }
}

#[derive(Debug)]
enum Failure {
    Spawn(io::Error),
    Exit {
        status: ExitStatus,
        stderr: Vec<u8>,
    },
    Read(io::Error),
    /// Reading what we were feeding the command failed (it exited successfully regardless).
    Input(io::Error),
    /// It ran longer than it may ([`CommandLine::run_within`]) and was stopped.
    Deadline(Duration),
}

/// A command that could not be started, failed, or whose output could not be read.
#[derive(Debug)]
pub struct CommandError {
    /// The program's name, the only part of the command line the message shows.
    program: String,
    /// Who reads the program's failures ([`CommandLine::interpreted_by`]).
    interpreter: Option<Arc<dyn Interpreter>>,
    failure: Failure,
}

impl CommandError {
    fn new(command: &CommandLine, failure: Failure) -> CommandError {
        CommandError {
            program: command.program.to_string_lossy().into_owned(),
            interpreter: command.interpreter.clone(),
            failure,
        }
    }

    /// The error of a command (`program args…`) that exited with `code` after writing `stderr`:
    /// how a stand-in for a program (the unit tests' fake cluster, check mode's twin) reports a
    /// failure. Read plainly unless [`CommandError::interpreted_by`] says whose failure it is.
    pub fn exited(command: &str, code: i32, stderr: &str) -> CommandError {
        use std::os::unix::process::ExitStatusExt;
        CommandError {
            program: command.split(' ').next().unwrap_or_default().to_string(),
            interpreter: None,
            failure: Failure::Exit {
                status: ExitStatus::from_raw((code & 0xff) << 8),
                stderr: stderr.as_bytes().to_vec(),
            },
        }
    }

    /// Has the failure read by `interpreter`, exactly like a failure of the real program's
    /// ([`CommandError::kind`], the message).
    pub fn interpreted_by(mut self, interpreter: Arc<dyn Interpreter>) -> CommandError {
        self.interpreter = Some(interpreter);
        self
    }

    /// Unwraps a [`CommandError`] that travelled through an `io::Error` from [`ChildReader`].
    fn from_io(command: &CommandLine, err: io::Error) -> CommandError {
        match err.downcast::<CommandError>() {
            Ok(inner) => inner,
            Err(err) => CommandError::new(command, Failure::Read(err)),
        }
    }

    /// The command error behind `err`, also when it reached us inside the I/O error of a stream
    /// that a failed child was feeding.
    pub fn find(err: &anyhow::Error) -> Option<&CommandError> {
        err.chain().find_map(|cause| {
            cause.downcast_ref::<CommandError>().or_else(|| {
                cause
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::get_ref)
                    .and_then(|inner| inner.downcast_ref::<CommandError>())
            })
        })
    }

    /// The child's stderr, as text, when it ran and failed.
    pub fn stderr(&self) -> Option<String> {
        match &self.failure {
            Failure::Exit { stderr, .. } => Some(String::from_utf8_lossy(stderr).into_owned()),
            _ => None,
        }
    }

    /// What the failure means, as the command's [`Interpreter`] reads it; [`FailureKind::Other`]
    /// for a command without one.
    pub fn kind(&self) -> FailureKind {
        match (&self.failure, &self.interpreter) {
            (Failure::Exit { status, stderr }, Some(interpreter)) => {
                interpreter.kind(*status, stderr)
            }
            _ => FailureKind::Other,
        }
    }
}

impl fmt::Display for CommandError {
    /// The cause, first and on one line; only the program's name, never its long command line
    /// (the debug log of every command shows that, see [`log_end`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = &self.program;
        match &self.failure {
            Failure::Spawn(err) => write!(f, "cannot run {program}: {err}"),
            Failure::Read(err) => write!(f, "cannot read the output of {program}: {err}"),
            Failure::Input(err) => write!(f, "cannot feed the input of {program}: {err}"),
            Failure::Deadline(limit) => write!(
                f,
                "{program} did not finish within {} and was stopped",
                crate::progress::duration(*limit)
            ),
            Failure::Exit { status, stderr } => {
                let interpreter = self.interpreter.as_deref();
                if let Some(cause) = interpreter.and_then(|i| i.cause(*status, stderr)) {
                    return f.write_str(&cause);
                }
                let status = match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => status.to_string(),
                };
                let summary = match interpreter {
                    Some(interpreter) => interpreter.summary(stderr),
                    None => plain_summary(stderr),
                };
                let program_prefix = format!("{program}: ");
                let said = summary
                    .split(" / ")
                    .map(|line| line.strip_prefix(&program_prefix).unwrap_or(line))
                    .collect::<Vec<_>>()
                    .join(" / ");
                if said.is_empty() {
                    write!(f, "{program} failed with {status}")
                } else {
                    write!(f, "{said} ({program} {status})")
                }
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// The last lines of a child's stderr, joined so the whole error stays on one line: all that is
/// known of the failure of a program nobody interprets.
fn plain_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn sh(script: &str) -> CommandLine {
        CommandLine::new("sh").args(["-c", script])
    }

    #[test]
    fn a_bounded_command_gets_its_environment_and_its_output_is_read_back() {
        let said = sh("echo \"$CEPHBACKUP_IMAGE\"; echo to-stderr >&2")
            .env("CEPHBACKUP_IMAGE", "vm 1")
            .run_within(Duration::from_secs(30))
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&said), "vm 1\nto-stderr\n");
        let err = sh("echo frozen; echo 'cannot freeze' >&2; exit 3")
            .run_within(Duration::from_secs(30))
            .unwrap_err();
        assert_eq!(err.to_string(), "frozen / cannot freeze (sh exit status 3)");
    }

    #[test]
    fn a_bounded_command_is_stopped_at_its_deadline_and_a_straggler_does_not_hold_us() {
        let started = Instant::now();
        let err = sh("sleep 30")
            .run_within(Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh did not finish within 0.3 s and was stopped"
        );
        // A command that ignores SIGTERM is killed after the grace period.
        let err = sh("trap '' TERM; sleep 30")
            .run_within(Duration::from_millis(300))
            .unwrap_err();
        assert!(err.to_string().contains("was stopped"), "{err}");
        // A background process left holding the output does not keep us waiting.
        sh("sleep 30 & echo started")
            .run_within(Duration::from_secs(30))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_descriptor_goes_to_the_children_of_its_thread_only_while_its_guard_lives() {
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd();
        let probe = format!("test -e /proc/self/fd/{fd} && echo open || echo closed");
        let seen = |script: &str| String::from_utf8(sh(script).output().unwrap()).unwrap();
        assert_eq!(seen(&probe), "closed\n", "closed on exec by default");
        let guard = inherit_on_this_thread(file.as_fd());
        assert_eq!(seen(&probe), "open\n");
        let other_thread = std::thread::scope(|scope| scope.spawn(|| seen(&probe)).join());
        assert_eq!(other_thread.unwrap(), "closed\n");
        drop(guard);
        assert_eq!(seen(&probe), "closed\n");
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(sh("printf 'a b'").output().unwrap(), b"a b");
    }

    #[test]
    fn failure_carries_command_status_and_stderr() {
        let err = sh("echo 'boom' >&2; echo 'sh: it broke' >&2; exit 1")
            .output()
            .unwrap_err();
        assert_eq!(err.to_string(), "boom / it broke (sh exit status 1)");
        let err = sh("exit 1").output().unwrap_err();
        assert_eq!(err.to_string(), "sh failed with exit status 1");
    }

    #[test]
    fn a_failing_tar_is_reported_in_its_own_words() {
        // tar exits with 2 on a missing file: not Ceph's ENOENT, and not restated as one.
        let err = CommandLine::new("tar")
            .args(["-xf", "/nonexistent/x.tar"])
            .output()
            .unwrap_err();
        assert_eq!(err.kind(), FailureKind::Other);
        let message = err.to_string();
        assert!(message.starts_with("/nonexistent/x.tar: "), "{message}");
        assert!(message.ends_with(" (tar exit status 2)"), "{message}");
    }

    #[test]
    fn words_like_cephs_mean_nothing_from_another_program() {
        for (script, message) in [
            (
                "echo 'mount: error opening image x: (2) No such file or directory' >&2; exit 2",
                "mount: error opening image x: (2) No such file or directory (sh exit status 2)",
            ),
            (
                "echo \"mount: couldn't connect to the cluster!\" >&2; exit 13",
                "mount: couldn't connect to the cluster! (sh exit status 13)",
            ),
            (
                "echo 'auth: unable to find a keyring on /k: (2) No such file or directory' >&2; \
                 echo \"mount: couldn't connect to the cluster!\" >&2; exit 2",
                "auth: unable to find a keyring on /k: (2) No such file or directory / \
                 mount: couldn't connect to the cluster! (sh exit status 2)",
            ),
            (
                "echo 'mount: (110) Connection timed out' >&2; exit 110",
                "mount: (110) Connection timed out (sh exit status 110)",
            ),
        ] {
            let err = sh(script).run().unwrap_err();
            assert_eq!(err.kind(), FailureKind::Other, "{script}");
            assert_eq!(err.to_string(), message);
        }
        for code in [2, 13, 16, 17, 110, 122] {
            let err = sh(&format!("exit {code}")).run().unwrap_err();
            assert_eq!(err.kind(), FailureKind::Other, "exit {code}");
        }
        // The stand-in's error of the same words, unread too.
        let err = CommandError::exited("umount /m", 1, "umount: couldn't connect to the cluster!");
        assert_eq!(err.kind(), FailureKind::Other);
        assert_eq!(
            err.to_string(),
            "couldn't connect to the cluster! (umount exit status 1)"
        );
    }

    #[test]
    fn only_an_interpreter_stops_a_stalled_stream() {
        let started = Instant::now();
        let out = sh("echo '(110) Connection timed out' >&2; sleep 1; echo done")
            .stop_on_timeout(true)
            .output()
            .unwrap();
        assert_eq!(out, b"done\n");
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[test]
    fn a_missing_program_is_reported_as_not_found() {
        let err = CommandLine::new("/nonexistent/rbd").output().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rbd"));
    }

    #[test]
    fn streaming_reader_reports_failure_at_the_end_of_the_stream() {
        let mut reader = sh("head -c 100000 /dev/zero; echo boom >&2; exit 3")
            .spawn_reader()
            .unwrap();
        let mut sink = Vec::new();
        let err = reader.read_to_end(&mut sink).unwrap_err();
        assert_eq!(sink.len(), 100000);
        assert_eq!(err.to_string(), "boom (sh exit status 3)");
    }

    #[test]
    fn a_child_writing_much_to_stderr_does_not_block() {
        let out = sh("head -c 1000000 /dev/zero >&2; echo done")
            .output()
            .unwrap();
        assert_eq!(out, b"done\n");
    }

    #[test]
    fn input_is_streamed_to_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy");
        let data = vec![7u8; 300_000];
        CommandLine::new("sh")
            .args(["-c", "cat > \"$0\"", out.to_str().unwrap()])
            .run_with_input(&mut &data[..])
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    #[test]
    fn a_child_that_stops_reading_reports_its_own_failure() {
        let data = vec![7u8; 1_000_000];
        let err = sh("head -c 10 >/dev/null; echo 'rbd: import failed' >&2; exit 5")
            .run_with_input(&mut &data[..])
            .unwrap_err();
        assert_eq!(err.to_string(), "rbd: import failed (sh exit status 5)");
    }

    #[test]
    fn display_quotes_words_with_spaces() {
        let cmd = CommandLine::new("rbd").args(["snap", "ls", "rbd/my disk"]);
        assert_eq!(cmd.to_string(), "rbd snap ls 'rbd/my disk'");
    }
}
