//! The disk spool killed with SIGKILL (issue 16): a child process (this test binary again)
//! appends records, and, while "the collector is up", reads and acknowledges them; the parent
//! kills it at a random moment, 24 times, and reopens the spool each time.
//!
//! What must hold after each kill:
//! - every record the child reported appended and not acknowledged is recovered, byte for byte
//!   (a process crash loses nothing written: `append` writes before it returns), except the one
//!   whose acknowledgement the kill cut off before it was reported (it was delivered);
//! - nothing acknowledged comes back, except the one record whose acknowledgement the kill
//!   interrupted (at least once), and nothing is recovered that was never appended, except the
//!   one append the kill interrupted before it was reported;
//! - no reported record is damaged; the one record a kill may tear (Linux ends a write early at
//!   a page boundary when a fatal signal is pending) was never reported, and recovery cuts it
//!   off and counts it; opening takes bounded time;
//! - while the child holds the spool, a second opener is refused with `Locked`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use telemetry_gateway::testing::internals::{
    DiskSpool, SpoolError, SpoolOptions, SyncPolicy, WhenFull,
};

const CHILD_DIR: &str = "TELEMETRY_GATEWAY_SPOOL_CRASH_DIR";
const CHILD_UP: &str = "TELEMETRY_GATEWAY_SPOOL_CRASH_UP";

fn options() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 64 << 10,
        sync: SyncPolicy::Interval(Duration::from_millis(50)),
        when_full: WhenFull::DropNewest,
    }
}

/// The bytes of record `n` (the child's n-th append of its run, `seed` per run).
fn payload(seed: u64, n: u64) -> Vec<u8> {
    let len = 50 + ((seed * 31 + n * 17) % 900) as usize;
    (0..len)
        .map(|i| (seed as usize * 7 + n as usize * 13 + i) as u8)
        .collect()
}

/// The child: runs only when the parent set its directory. Prints one line per completed
/// operation: `a <id> <seed> <n>` after an append, `k <id>` after an acknowledgement.
#[test]
fn child_appends_and_acknowledges_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let up = std::env::var_os(CHILD_UP).is_some();
    let seed: u64 = std::process::id().into();
    let (mut spool, _) = DiskSpool::open(Path::new(&dir), options()).expect("open");
    let mut out = std::io::stdout().lock();
    // libtest has printed "test <name> ... " without a newline.
    writeln!(out, "\nready").unwrap();
    out.flush().unwrap();
    for n in 0.. {
        let events = 1 + (n % 7) as u32;
        let a = spool.append(events, &payload(seed, n)).expect("append");
        writeln!(out, "a {} {seed} {n}", a.id).unwrap();
        out.flush().unwrap();
        if up && n % 3 != 0 {
            if let Some(r) = spool.read_next().expect("read") {
                spool.ack(r.id).expect("ack");
                writeln!(out, "k {}", r.id).unwrap();
                out.flush().unwrap();
            }
        }
        spool.tick().expect("sync");
    }
}

#[test]
fn a_spool_killed_at_random_moments_loses_nothing_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // id -> bytes of every record appended and not acknowledged, as the children reported.
    let mut live: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut twice = 0u64;
    let mut torn = 0u64;
    for round in 0..24 {
        let up = round % 2 == 0;
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "spool_crash::child_appends_and_acknowledges_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if up {
            cmd.env(CHILD_UP, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if l == "ready" {
                    let _ = tx.send(l);
                } else {
                    lines.push(l);
                }
            }
            lines
        });
        // Once the child holds the spool, a second opener is refused.
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: the child never opened the spool: {e}"));
        match DiskSpool::open(dir.path(), options()) {
            Err(SpoolError::Locked { .. }) => {}
            other => panic!("round {round}: a second opener was not refused: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20 + next() % 230));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut last_append = None;
        let mut last_ack = None;
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["a", id, seed, n] => {
                    let id: u64 = id.parse().unwrap();
                    live.insert(id, payload(seed.parse().unwrap(), n.parse().unwrap()));
                    last_append = Some(id);
                }
                ["k", id] => {
                    let id: u64 = id.parse().unwrap();
                    assert!(live.remove(&id).is_some(), "round {round}: ack of {id}");
                    last_ack = Some(id);
                }
                _ => {}
            }
        }
        let opened = Instant::now();
        let (mut spool, rec) = DiskSpool::open(dir.path(), options()).unwrap();
        let open_took = opened.elapsed();
        assert!(
            open_took < Duration::from_secs(5),
            "round {round}: open took {open_took:?}"
        );
        // A kill can tear the record being written (Linux ends a write early at a page
        // boundary when a fatal signal is pending): that append never returned, so the record
        // was never reported; recovery cuts it off and counts it. Nothing else may be damaged.
        assert!(rec.corrupt_records <= 1, "round {round}: {rec:?}");
        assert_eq!(
            rec.skipped_bytes > 0,
            rec.corrupt_records == 1,
            "round {round}: {rec:?}"
        );
        torn += rec.corrupt_records;
        let mut found = Vec::new();
        while let Some(r) = spool.read_next().unwrap() {
            found.push((r.id, r.payload));
        }
        let newest = last_append.unwrap_or(0);
        for (id, bytes) in &found {
            match live.get(id) {
                Some(want) => assert_eq!(bytes, want, "round {round}: {id}"),
                // Appended by the kill's interrupted step, never reported: only the next id.
                None if *id > newest => assert_eq!(*id, newest + 1, "round {round}"),
                // Acknowledged, back again: only the ack the kill may have interrupted is
                // possible, and the child reported it, so it is a duplicate, counted here.
                None => {
                    twice += 1;
                    assert!(
                        Some(*id) <= last_ack.map(|a| a + 3),
                        "round {round}: acknowledged {id} came back"
                    );
                }
            }
        }
        let found_ids: std::collections::BTreeSet<u64> = found.iter().map(|(id, _)| *id).collect();
        let lost: Vec<u64> = live
            .keys()
            .filter(|id| !found_ids.contains(id))
            .copied()
            .collect();
        // The child reads and acknowledges in id order, so the only record whose
        // acknowledgement the kill may have cut off before it was reported is the oldest left.
        let interrupted_ack = if up {
            live.keys().next().copied()
        } else {
            None
        };
        let lost: Vec<u64> = lost
            .into_iter()
            .filter(|id| Some(*id) != interrupted_ack)
            .collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?} ({rec:?})");
        // Every fourth round the parent delivers what it recovered (acknowledges it all); else
        // the next child finds everything recovered (the interrupted append included).
        if round % 4 == 3 {
            for (id, _) in &found {
                spool.ack(*id).unwrap();
            }
            live.clear();
        } else {
            live = found.into_iter().collect();
        }
        drop(spool);
        eprintln!(
            "round {round} ({}): {} lines, {} recovered, open {:?}",
            if up { "up" } else { "down" },
            lines.len(),
            found_ids.len(),
            open_took
        );
    }
    eprintln!(
        "acknowledged records delivered again after a kill: {twice}; records torn by a kill \
         (their append never returned): {torn}"
    );
}

const FAULT_DIR: &str = "TELEMETRY_GATEWAY_SPOOL_FAULT_DIR";

/// Files of this process may not grow past `bytes`: a write past it fails with `EFBIG`, as on a
/// full disk (`SIGXFSZ`, which would kill the process, is ignored). Call it in a child before it
/// starts threads or writes files.
pub(super) fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls that change this process's signal disposition and limit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// The child of the disk-fault test: its files may not grow past 64 KiB (`RLIMIT_FSIZE`, with
/// `SIGXFSZ` ignored, so a write past it fails with `EFBIG` as a full disk would). Appends until
/// the limit answers, then prints what it saw.
#[test]
fn child_appends_until_the_disk_refuses() {
    let Some(dir) = std::env::var_os(FAULT_DIR) else {
        return;
    };
    limit_file_size(64 * 1024);
    let opts = SpoolOptions {
        segment_bytes: 1 << 20,
        ..options()
    };
    let (mut spool, _) = DiskSpool::open(Path::new(&dir), opts).expect("open");
    let mut out = std::io::stdout().lock();
    let mut appended = 0u64;
    let mut failures = Vec::new();
    for n in 0..400u64 {
        match spool.append(1, &payload(1, n)) {
            // A smaller record may still fit after a failure: it must read back too.
            Ok(a) => {
                appended += 1;
                writeln!(out, "\na {}", a.id).unwrap();
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    // Every record written before the fault reads back whole.
    let mut read = 0;
    while let Some(r) = spool.read_next().expect("read after a fault") {
        assert_eq!(r.payload, payload(1, r.id - 1));
        read += 1;
    }
    writeln!(
        out,
        "\nappended {appended} read {read} failures {} first {}",
        failures.len(),
        failures.first().cloned().unwrap_or_default()
    )
    .unwrap();
    out.flush().unwrap();
}

/// Disk faults (the file size limit standing in for a full disk): an append that cannot be
/// written returns an error naming the file, never panics; the partial record is cut off, so
/// the records before it read back whole, in this process and after a reopen without the limit.
#[test]
fn a_full_disk_fails_appends_cleanly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spool_crash::child_appends_until_the_disk_refuses",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAULT_DIR, dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("appended "))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    let f: Vec<&str> = summary.split(' ').collect();
    let appended: u64 = f[1].parse().unwrap();
    let read: u64 = f[3].parse().unwrap();
    let failures: u64 = f[5].parse().unwrap();
    eprintln!("disk fault: {summary}");
    assert!(appended > 10 && failures > 0, "{summary}");
    assert_eq!(read, appended, "{summary}");
    assert!(
        summary.contains("File too large") && summary.contains(".seg"),
        "the error says what and where: {summary}"
    );
    let (mut spool, rec) = DiskSpool::open(dir.path(), options()).unwrap();
    assert_eq!(rec.records, appended, "{rec:?}");
    assert_eq!(rec.corrupt_records, 0, "{rec:?}");
    assert_eq!(rec.skipped_bytes, 0, "{rec:?}");
    let mut n = 0;
    while let Some(r) = spool.read_next().unwrap() {
        assert_eq!(r.payload, payload(1, r.id - 1));
        n += 1;
    }
    assert_eq!(n, appended);
}

/// A second gateway on the same `spool.path` is refused at start with an error naming the key
/// and the directory; once the first has shut down (its locks released), it starts.
#[test]
fn a_second_gateway_on_the_same_spool_path_is_refused() {
    let rx = telemetry_gateway::testing::OtlpReceiver::start();
    let (mut c, d) = crate::support::config();
    c.otlp.endpoint = Some(rx.endpoint());
    c.spool.kind = telemetry_gateway::config::SpoolKind::Disk;
    c.spool.path = Some(d.path().join("spool"));
    let first = telemetry_gateway::start(c.clone()).unwrap();
    let err = telemetry_gateway::start(c.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spool.path: spool directory")
            && err.contains("in use by another process")
            && err.matches("spool.path").count() == 1,
        "{err}"
    );
    first.shutdown_blocking(crate::support::DEADLINE);
    let second = telemetry_gateway::start(c).expect("the locks were released at shutdown");
    second.shutdown_blocking(crate::support::DEADLINE);
}
