//! A durable, bounded queue of records on disk: the spool between the batching and an exporter.
//!
//! **Why a segment log.** A record is an encoded export request (bytes) and the number of events
//! it carries. Records are appended to segment files in order and acknowledged in (nearly) the
//! same order, so the natural structure is a log: appends are sequential writes, a drained
//! segment is one `unlink` that gives its space back at once, and recovery is one sequential
//! read. docs/adr/0004-disk-spool.md compares it with SQLite and redb, with numbers.
//!
//! **Layout.** One directory per spool:
//! - `lock`: held with an exclusive advisory lock for the life of the [`DiskSpool`]; a second
//!   process (or a second spool in this one) opening the same directory is refused
//!   ([`SpoolError::Locked`]).
//! - `acked`: the acknowledgement watermark (every record id at or below it is done), in two
//!   checksummed slots written alternately, so a torn write leaves the previous value readable.
//! - `<first id, 20 digits>.seg`: segment files of records ([`format`]), at most
//!   `segment_bytes` each (a larger record gets a segment of its own).
//!
//! **Ordering of deletes.** A segment is deleted only after a watermark covering all of it is
//! written and synced; a crash between the two leaves a fully acknowledged segment, which the next
//! open deletes. Files the spool does not know (any other name) are left alone and never block
//! an open.
//!
//! **Recovery** ([`DiskSpool::open`]) reads every segment once, in order, and never loops: a
//! record is accepted only with a good header and checksum; a torn tail (the last bytes of a
//! segment, shorter than their header says) is cut off; a damaged region is skipped by searching
//! for the next good record. Records lost to damage are counted exactly by the gap in record ids
//! (`corrupt_records`; a damaged record at the very end of the newest segment, which no later id
//! reveals, is counted when its header is still readable); their events are counted when their
//! header survived. A segment with damage is rewritten (to a temporary file, synced, renamed)
//! with a lost-range marker in place of what was lost, so the next open does not count it again
//! and the watermark can step over the lost ids. Open takes time proportional to the bytes on
//! disk, at most `max_bytes`, and holds one segment in memory at a time.
//!
//! **Budget.** The bytes of the segments and the `acked` file together never exceed
//! `max_bytes`. When an append does not fit, [`WhenFull::DropNewest`] refuses it and
//! [`WhenFull::DropOldest`] deletes the oldest whole segments first (their unread events are
//! reported as evicted); either way the caller counts the loss under its own reason.
//!
//! **Durability** ([`SyncPolicy`]). Every append is written to the file before `append` returns,
//! so a crash of the process (SIGKILL, panic = abort) loses nothing appended. What a power loss
//! or kernel crash can lose depends on the policy: `always` syncs each append (nothing acknowledged
//! to the caller is lost), `interval` syncs at most every `sync_interval` (up to that much), and
//! `never` leaves it to the operating system (up to its writeback delay, typically 30 s on
//! Linux). An acknowledgement lost that way only makes a record be sent again.
//!
//! This type does blocking file I/O: callers run it on a thread of their own or in
//! `spawn_blocking`, never on an actor's turn.

mod format;

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use format::{Header, HEADER_BYTES};

/// When appended records are synced to stable storage (`spool.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every append: a power loss loses nothing `append` returned for.
    Always,
    /// At most every this long (checked at each append and by [`DiskSpool::tick`]): a power
    /// loss loses at most that much of the latest appends.
    Interval(Duration),
    /// Never explicitly: the operating system writes back when it likes.
    Never,
}

/// What an append that does not fit in the budget does (`spool.when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the new record.
    DropNewest,
    /// Delete the oldest whole segments until it fits (the writer's segment is never deleted).
    DropOldest,
}

/// How a spool is bounded and synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Bytes on disk, segments and metadata together.
    pub max_bytes: u64,
    /// Bytes per segment file before a new one is started.
    pub segment_bytes: u64,
    /// When appends reach stable storage.
    pub sync: SyncPolicy,
    /// What an append that does not fit does.
    pub when_full: WhenFull,
}

impl SpoolOptions {
    /// The largest payload one record may carry: a quarter of the budget, and what the header's
    /// length field can say.
    pub fn max_payload(&self) -> u32 {
        (self.max_bytes / 4)
            .saturating_sub(HEADER_BYTES as u64)
            .min(u64::from(u32::MAX)) as u32
    }
}

/// Why the spool could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another spool (in this process or another) holds the directory.
    #[error("spool directory {path} is in use by another process (its lock file is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A file operation failed (no space, read-only directory, I/O error).
    #[error("spool {op} failed for {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The record does not fit in the budget (`when_full = "drop_newest"`, or nothing older
    /// could be deleted).
    #[error("spool is full: {needed} more bytes needed, {used} of {max} used")]
    Full {
        /// The record's size on disk.
        needed: u64,
        /// Bytes in use.
        used: u64,
        /// The budget.
        max: u64,
    },
    /// The payload is larger than one record may be.
    #[error("record of {len} bytes is larger than the spool's record limit of {max} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit ([`SpoolOptions::max_payload`]).
        max: u32,
    },
}

impl SpoolError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// What [`DiskSpool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records left from an earlier process, not acknowledged: they will be read again.
    pub records: u64,
    /// The events those records carry.
    pub events: u64,
    /// Records lost to damage (counted by the gap in record ids).
    pub corrupt_records: u64,
    /// Events of damaged records whose header survived (the others' are unknown).
    pub corrupt_events: u64,
    /// Bytes skipped: torn tails and damaged regions.
    pub skipped_bytes: u64,
    /// Fully acknowledged segments a crash had left behind, deleted now.
    pub stale_segments: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its id: pass it to [`DiskSpool::ack`] once the record is exported (or given up).
    pub id: u64,
    /// The events it carries.
    pub events: u32,
    /// When it was appended (milliseconds since the Unix epoch).
    pub appended_ms: u64,
    /// What was appended.
    pub payload: Vec<u8>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The new record's id.
    pub id: u64,
    /// Unread events deleted to make room (`when_full = "drop_oldest"`).
    pub evicted_events: u64,
    /// Records deleted to make room.
    pub evicted_records: u64,
    /// Every id at or below this is gone (deleted to make room, or acknowledged); 0 when
    /// nothing was deleted. A record read before and at or below it is forgotten: its
    /// acknowledgement does nothing, and it does not come back after a reopen.
    pub evicted_through: u64,
}

/// The spool's state, for self-metrics and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStatus {
    /// Bytes on disk (segments and metadata).
    pub bytes: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Records not yet acknowledged.
    pub records: u64,
    /// Events in records not yet acknowledged.
    pub events: u64,
    /// Events in records not yet read.
    pub unread_events: u64,
    /// When the oldest unacknowledged record was appended (ms since the epoch), if any.
    pub oldest_ms: Option<u64>,
    /// Segment files.
    pub segments: usize,
    /// Records that failed their check when read back (damage found after the open); the
    /// reader went on from the next good record.
    pub damaged_reads: u64,
    /// Records appended since the open.
    pub appends: u64,
    /// Records acknowledged since the open.
    pub acks: u64,
    /// Syncs that wrote something to stable storage since the open, and the time they took.
    pub syncs: u64,
    /// Microseconds spent in those syncs.
    pub sync_micros: u64,
}

/// One segment file, summarized in memory (memory is per segment, never per record).
#[derive(Debug)]
struct Segment {
    first_id: u64,
    path: PathBuf,
    /// Bytes of good records (the file may be longer after a failed write; never read past).
    bytes: u64,
    /// Largest record id in it (0 when empty).
    last_id: u64,
    /// Records not acknowledged, and their events (acknowledged out of order: see `acked_above`).
    unacked_records: u64,
    unacked_events: u64,
    /// Records and events not yet read.
    unread_records: u64,
    unread_events: u64,
    /// Append time of its oldest record not acknowledged (approximately: its first record's).
    oldest_ms: Option<u64>,
}

impl Segment {
    /// A segment file with no record counted yet.
    fn empty(first_id: u64, path: PathBuf) -> Self {
        Segment {
            first_id,
            path,
            bytes: 0,
            last_id: 0,
            unacked_records: 0,
            unacked_events: 0,
            unread_records: 0,
            unread_events: 0,
            oldest_ms: None,
        }
    }
}

/// Where the next read starts.
#[derive(Debug, Default)]
struct ReadPos {
    /// Index into `segments` is found by `first_id`; `None` means "the oldest segment".
    segment_first_id: Option<u64>,
    offset: u64,
    file: Option<File>,
}

/// A durable, bounded queue of records in one directory. See the module docs.
#[derive(Debug)]
pub struct DiskSpool {
    dir: PathBuf,
    opts: SpoolOptions,
    _lock: File,
    ack_file: File,
    ack_slot: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    next_id: u64,
    /// Every id at or below it is done.
    acked: u64,
    /// Ids above `acked` acknowledged out of order, with their events.
    acked_above: BTreeSet<u64>,
    read: ReadPos,
    /// Records read and not yet acknowledged: id -> events (for eviction and accounting).
    in_flight: std::collections::BTreeMap<u64, u32>,
    last_sync: Instant,
    unsynced: bool,
    buf: Vec<u8>,
    damaged_reads: u64,
    appends: u64,
    acks: u64,
    syncs: u64,
    sync_micros: u64,
    /// Ranges of ids lost to damage (found at open), ascending: never acknowledged, so the
    /// watermark steps over them.
    lost: VecDeque<(u64, u64)>,
}

const ACK_FILE: &str = "acked";
/// How long `open` waits for a lock held by someone else before it says `Locked`.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);
const LOCK_FILE: &str = "lock";
const ACK_SLOT_BYTES: u64 = 16;
const ACK_FILE_BYTES: u64 = 2 * ACK_SLOT_BYTES;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

/// Whether `dir` holds a segment file with bytes in it: a spool there may have records to
/// send (a cheap look, without the lock; opening the spool says for sure).
pub(crate) fn holds_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            parse_segment_name(&e.file_name().to_string_lossy()).is_some()
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn ack_slot_bytes(watermark: u64) -> [u8; ACK_SLOT_BYTES as usize] {
    let mut b = [0u8; ACK_SLOT_BYTES as usize];
    b[..8].copy_from_slice(&watermark.to_le_bytes());
    let crc = format::checksum(&b[..8]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The watermark in one slot, if its checksum holds.
fn read_ack_slot(b: &[u8]) -> Option<u64> {
    let w = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
    (format::checksum(&b[..8]) == crc).then_some(w)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never a
/// mix: written to `<path>.tmp`, synced, renamed over, and the directory synced.
fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("seg.tmp");
    let mut f = File::create(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| SpoolError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SpoolError::io("replace", path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A record found by the recovery scan.
struct Found {
    header: Header,
    offset: u64,
}

/// Scans one segment's bytes: the good records in order, the bytes skipped, and where a damaged
/// region that runs to the end (a torn tail) starts.
fn scan_segment(data: &[u8], max_payload: u32) -> (Vec<Found>, u64, Option<usize>) {
    let mut found = Vec::new();
    let mut skipped = 0u64;
    let mut tail = None;
    let mut at = 0usize;
    let good_at = |at: usize| -> Option<Header> {
        let head: &[u8; HEADER_BYTES] = data.get(at..at + HEADER_BYTES)?.try_into().ok()?;
        let h = format::decode_header(head, max_payload).ok()?;
        let payload = data.get(at + HEADER_BYTES..at + HEADER_BYTES + h.len as usize)?;
        format::verify(head, &h, payload).then_some(h)
    };
    while at < data.len() {
        if let Some(h) = good_at(at) {
            found.push(Found {
                header: h,
                offset: at as u64,
            });
            at += h.record_bytes() as usize;
            continue;
        }
        // Damage or a torn tail: look for the next good record after this byte.
        let resume = (at + 1..data.len())
            .filter(|&i| {
                data[i..].starts_with(&format::MAGIC) || data[i..].starts_with(&format::LOST_MAGIC)
            })
            .find(|&i| good_at(i).is_some());
        let next = resume.unwrap_or(data.len());
        if resume.is_none() {
            tail = Some(at);
        }
        skipped += (next - at) as u64;
        at = next;
    }
    (found, skipped, tail)
}

/// The header a damaged region starts with, when it is still readable.
fn header_at(data: &[u8], at: usize, max_payload: u32) -> Option<Header> {
    let head: &[u8; HEADER_BYTES] = data.get(at..at + HEADER_BYTES)?.try_into().ok()?;
    format::decode_header(head, max_payload).ok()
}

impl DiskSpool {
    /// Opens (or creates) the spool in `dir`: takes its lock, reads the watermark, scans every
    /// segment (see the module docs) and deletes fully acknowledged ones.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<(Self, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SpoolError::io("open lock file", &lock_path, e))?;
        // A lock held only briefly is waited for: a process that forks copies its open files
        // into the child until the child's `exec` closes them, so a spool dropped and opened
        // again at that moment meets its own lock for a few milliseconds.
        let began = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if began.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SpoolError::Locked {
                        path: dir.to_owned(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(SpoolError::io("lock", &lock_path, e))
                }
            }
        }
        let ack_path = dir.join(ACK_FILE);
        let mut ack_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&ack_path)
            .map_err(|e| SpoolError::io("open", &ack_path, e))?;
        let mut ack_bytes = Vec::new();
        ack_file
            .read_to_end(&mut ack_bytes)
            .map_err(|e| SpoolError::io("read", &ack_path, e))?;
        let slots: Vec<u64> = ack_bytes
            .chunks(ACK_SLOT_BYTES as usize)
            .take(2)
            .filter_map(read_ack_slot)
            .collect();
        let acked = slots.iter().copied().max().unwrap_or(0);
        if ack_bytes.len() as u64 != ACK_FILE_BYTES {
            ack_file
                .set_len(ACK_FILE_BYTES)
                .map_err(|e| SpoolError::io("size", &ack_path, e))?;
        }

        let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(|e| SpoolError::io("list", dir, e))?
            .filter_map(|e| e.ok())
            .collect();
        // A rewrite a crash interrupted (see `replace_file`): the segment itself is intact.
        for e in &entries {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg.tmp"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let mut names: Vec<(u64, PathBuf)> = entries
            .iter()
            .filter_map(|e| {
                let name = e.file_name();
                parse_segment_name(name.to_str()?).map(|id| (id, e.path()))
            })
            .collect();
        names.sort();

        let max_payload = opts.max_payload();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut last_good: Option<u64> = None;
        // Ranges of ids lost to damage: the watermark moves over them.
        let mut lost: Vec<(u64, u64)> = Vec::new();
        let count = names.len();
        let oldest_first_id = names.first().map_or(1, |(id, _)| *id);
        for (i, (first_id, path)) in names.into_iter().enumerate() {
            let data = std::fs::read(&path).map_err(|e| SpoolError::io("read", &path, e))?;
            let (found, skipped, tail) = scan_segment(&data, max_payload);
            recovery.skipped_bytes += skipped;
            let last = i + 1 == count;
            let mut seg = Segment::empty(first_id, path.clone());
            // The segment as it will be kept: its good records, with a lost-range marker in
            // place of each run of records lost to damage, so the next open finds the loss
            // already counted. Rewritten only when it differs from the file.
            let mut kept: Vec<u8> = Vec::with_capacity(data.len());
            let mut rewrite = skipped > 0;
            let mut expected_end = 0u64;
            // The last id this segment accounts for (a record or a marker's range).
            let mut seg_last: Option<u64> = None;
            for f in &found {
                let h = f.header;
                let bytes = &data[f.offset as usize..(f.offset + h.record_bytes()) as usize];
                // Before the first good record, the oldest segment's name says which id came
                // first (a segment with no good record left says nothing of its own).
                if let Some(prev) = last_good.or(oldest_first_id.checked_sub(1)) {
                    let missing_from = (prev + 1).max(acked + 1);
                    if h.id > missing_from {
                        let missing = h.id - missing_from;
                        recovery.corrupt_records += missing;
                        // The damaged bytes just before this record may still say how many
                        // events they held.
                        let events = (f.offset != expected_end)
                            .then(|| header_at(&data, expected_end as usize, max_payload))
                            .flatten()
                            .filter(|d| d.kind == format::Kind::Data)
                            .map_or(0, |d| d.events);
                        recovery.corrupt_events += u64::from(events);
                        lost.push((missing_from, h.id - 1));
                        format::encode_lost(&mut kept, missing_from, h.id - 1, events);
                        rewrite = true;
                    }
                }
                seg_last = Some(if h.kind == format::Kind::Lost {
                    h.appended_ms
                } else {
                    h.id
                });
                if h.kind == format::Kind::Lost {
                    // Counted by the open that wrote it.
                    lost.push((h.id, h.appended_ms));
                    last_good = Some(last_good.map_or(h.appended_ms, |p| p.max(h.appended_ms)));
                    seg.last_id = seg.last_id.max(h.appended_ms);
                    kept.extend_from_slice(bytes);
                    expected_end = f.offset + h.record_bytes();
                    continue;
                }
                last_good = Some(last_good.map_or(h.id, |p| p.max(h.id)));
                expected_end = f.offset + h.record_bytes();
                kept.extend_from_slice(bytes);
                seg.last_id = seg.last_id.max(h.id);
                if h.id > acked {
                    seg.unacked_records += 1;
                    seg.unacked_events += u64::from(h.events);
                    seg.unread_records += 1;
                    seg.unread_events += u64::from(h.events);
                    seg.oldest_ms = Some(
                        seg.oldest_ms
                            .map_or(h.appended_ms, |o| o.min(h.appended_ms)),
                    );
                    recovery.records += 1;
                    recovery.events += u64::from(h.events);
                }
            }
            // A torn tail of the last segment, with a readable header, was one more record: the
            // next id (appends are in order; its own fields failed the checksum, so only its
            // event count is believed, and only when its id is the expected one). In an earlier
            // segment the gap before the next segment's first record counts it.
            let tail_header = tail
                .filter(|_| last)
                .and_then(|at| header_at(&data, at, max_payload))
                .filter(|h| h.kind == format::Kind::Data);
            // Its true id follows the segment's last good record (or is the segment's first);
            // at or below the watermark it had been acknowledged, and nothing is lost.
            let tail_id = seg_last.map_or(first_id, |g| g + 1);
            if let Some(h) = tail_header.filter(|_| tail_id > acked) {
                let id = tail_id;
                let events = if h.id == id { h.events } else { 0 };
                recovery.corrupt_records += 1;
                recovery.corrupt_events += u64::from(events);
                lost.push((id, id));
                format::encode_lost(&mut kept, id, id, events);
                seg.last_id = seg.last_id.max(id);
                last_good = Some(id);
            }
            if rewrite {
                replace_file(dir, &path, &kept)?;
            }
            seg.bytes = kept.len() as u64;
            // Deleted only when the watermark covers it: a segment whose records were all lost
            // keeps its lost-range markers until the watermark passes them.
            if seg.unacked_records == 0 && seg.last_id <= acked && !last {
                std::fs::remove_file(&path)
                    .map_err(|e| SpoolError::io("delete acknowledged segment", &path, e))?;
                recovery.stale_segments += 1;
                continue;
            }
            segments.push_back(seg);
        }
        let next_id = last_good.map_or(acked, |g| g.max(acked)) + 1;
        // The last segment takes appends again only if it is not empty of good records;
        // otherwise start afresh.
        let writer = match segments.back() {
            Some(s) if s.bytes > 0 => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(|e| SpoolError::io("open", &s.path, e))?,
            ),
            Some(_) => {
                if let Some(s) = segments.pop_back() {
                    std::fs::remove_file(&s.path)
                        .map_err(|e| SpoolError::io("delete empty segment", &s.path, e))?;
                }
                None
            }
            None => None,
        };
        let mut spool = DiskSpool {
            dir: dir.to_owned(),
            opts,
            _lock: lock,
            ack_file,
            ack_slot: 0,
            segments,
            writer,
            next_id,
            acked,
            acked_above: BTreeSet::new(),
            read: ReadPos::default(),
            in_flight: Default::default(),
            last_sync: Instant::now(),
            unsynced: false,
            buf: Vec::new(),
            damaged_reads: 0,
            appends: 0,
            acks: 0,
            syncs: 0,
            sync_micros: 0,
            lost: lost.into(),
        };
        if spool.advance_watermark() {
            spool.write_watermark()?;
        }
        Ok((spool, recovery))
    }

    /// Bytes on disk: segments and the watermark file.
    pub fn bytes(&self) -> u64 {
        ACK_FILE_BYTES + self.segments.iter().map(|s| s.bytes).sum::<u64>()
    }

    /// The state now.
    pub fn status(&self) -> SpoolStatus {
        SpoolStatus {
            bytes: self.bytes(),
            max_bytes: self.opts.max_bytes,
            records: self.segments.iter().map(|s| s.unacked_records).sum(),
            events: self.segments.iter().map(|s| s.unacked_events).sum(),
            unread_events: self.segments.iter().map(|s| s.unread_events).sum(),
            oldest_ms: self.segments.iter().find_map(|s| s.oldest_ms),
            segments: self.segments.len(),
            damaged_reads: self.damaged_reads,
            appends: self.appends,
            acks: self.acks,
            syncs: self.syncs,
            sync_micros: self.sync_micros,
        }
    }

    /// Appends one record of `events` events. Written to the file before it returns (and
    /// synced, under [`SyncPolicy::Always`]).
    pub fn append(&mut self, events: u32, payload: &[u8]) -> Result<Appended, SpoolError> {
        let max = self.opts.max_payload();
        if payload.len() > max as usize {
            return Err(SpoolError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let needed = (HEADER_BYTES + payload.len()) as u64;
        let (evicted_records, evicted_events, evicted_through) = self.make_room(needed)?;
        let rotate = match self.segments.back() {
            None => true,
            Some(s) => {
                self.writer.is_none() || (s.bytes > 0 && s.bytes + needed > self.opts.segment_bytes)
            }
        };
        if rotate {
            self.start_segment()?;
        }
        let id = self.next_id;
        let appended_ms = now_ms();
        format::encode(&mut self.buf, id, events, appended_ms, payload);
        let (Some(seg), Some(w)) = (self.segments.back_mut(), self.writer.as_mut()) else {
            return Err(SpoolError::io(
                "append",
                &self.dir,
                std::io::Error::other("no segment open"),
            ));
        };
        if let Err(e) = w.write_all(&self.buf) {
            // Cut the partial record off; if even that fails, never append after it again.
            if w.set_len(seg.bytes).is_err() {
                self.writer = None;
            }
            return Err(SpoolError::io("append", &seg.path, e));
        }
        seg.bytes += needed;
        seg.last_id = id;
        seg.unacked_records += 1;
        seg.unacked_events += u64::from(events);
        seg.unread_records += 1;
        seg.unread_events += u64::from(events);
        seg.oldest_ms.get_or_insert(appended_ms);
        self.next_id += 1;
        self.unsynced = true;
        match self.opts.sync {
            SyncPolicy::Always => self.sync()?,
            SyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync()?,
            _ => {}
        }
        self.appends += 1;
        Ok(Appended {
            id,
            evicted_events,
            evicted_records,
            evicted_through,
        })
    }

    /// Syncs appended records and the watermark to stable storage.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.last_sync = Instant::now();
        if !self.unsynced {
            return Ok(());
        }
        let began = Instant::now();
        if let (Some(w), Some(seg)) = (self.writer.as_ref(), self.segments.back()) {
            w.sync_data()
                .map_err(|e| SpoolError::io("sync", &seg.path, e))?;
        }
        self.ack_file
            .sync_data()
            .map_err(|e| SpoolError::io("sync", &self.dir.join(ACK_FILE), e))?;
        self.unsynced = false;
        self.syncs += 1;
        self.sync_micros += began.elapsed().as_micros() as u64;
        Ok(())
    }

    /// Syncs if the interval policy says it is time (call it from a timer).
    pub fn tick(&mut self) -> Result<(), SpoolError> {
        match self.opts.sync {
            SyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync(),
            _ => Ok(()),
        }
    }

    /// The next record not yet read, in append order; `None` when every record was read.
    /// A record read stays on disk until it is acknowledged; after a restart every record not
    /// acknowledged is read again.
    pub fn read_next(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            let Some(idx) = self.read_segment_index() else {
                return Ok(None);
            };
            let seg = &self.segments[idx];
            if self.read.segment_first_id != Some(seg.first_id) {
                self.read = ReadPos {
                    segment_first_id: Some(seg.first_id),
                    offset: 0,
                    file: None,
                };
            }
            if self.read.offset + HEADER_BYTES as u64 > seg.bytes {
                // This segment is read to its end; go on with the next, if any.
                if idx + 1 < self.segments.len() {
                    let next = self.segments[idx + 1].first_id;
                    self.read = ReadPos {
                        segment_first_id: Some(next),
                        offset: 0,
                        file: None,
                    };
                    continue;
                }
                return Ok(None);
            }
            let path = seg.path.clone();
            let bytes = seg.bytes;
            if self.read.file.is_none() {
                let f = File::open(&path).map_err(|e| SpoolError::io("open", &path, e))?;
                self.read.file = Some(f);
            }
            let max_payload = self.opts.max_payload();
            let offset = self.read.offset;
            let Some(file) = self.read.file.as_mut() else {
                return Ok(None);
            };
            let mut head = [0u8; HEADER_BYTES];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut head))
                .map_err(|e| SpoolError::io("read", &path, e))?;
            let header = format::decode_header(&head, max_payload)
                .ok()
                .filter(|h| offset + h.record_bytes() <= bytes);
            let Some(h) = header else {
                // Damaged (at open, or since): go on from the next good record of the segment.
                self.resync(idx, offset)?;
                continue;
            };
            let mut payload = vec![0u8; h.len as usize];
            file.read_exact(&mut payload)
                .map_err(|e| SpoolError::io("read", &path, e))?;
            if !format::verify(&head, &h, &payload) {
                self.resync(idx, offset)?;
                continue;
            }
            self.read.offset = offset + h.record_bytes();
            let seg = &mut self.segments[idx];
            if h.kind == format::Kind::Lost
                || h.id <= self.acked
                || self.acked_above.contains(&h.id)
            {
                continue;
            }
            seg.unread_records = seg.unread_records.saturating_sub(1);
            seg.unread_events = seg.unread_events.saturating_sub(u64::from(h.events));
            self.in_flight.insert(h.id, h.events);
            return Ok(Some(Record {
                id: h.id,
                events: h.events,
                appended_ms: h.appended_ms,
                payload,
            }));
        }
    }

    /// Acknowledges a record read with [`read_next`](Self::read_next): it will not be read
    /// again. Whole segments acknowledged are deleted (after the watermark is synced).
    pub fn ack(&mut self, id: u64) -> Result<(), SpoolError> {
        let Some(events) = self.in_flight.remove(&id) else {
            return Ok(());
        };
        self.acks += 1;
        if let Some(seg) = self.segment_of_mut(id) {
            seg.unacked_records = seg.unacked_records.saturating_sub(1);
            seg.unacked_events = seg.unacked_events.saturating_sub(u64::from(events));
            if seg.unacked_records == 0 {
                seg.oldest_ms = None;
            }
        }
        if id > self.acked {
            self.acked_above.insert(id);
        }
        if self.advance_watermark() {
            self.write_watermark()?;
        }
        self.delete_done_segments()
    }

    /// Moves the watermark over every id acknowledged or lost in a row; whether it moved.
    fn advance_watermark(&mut self) -> bool {
        let before = self.acked;
        loop {
            let next = self.acked + 1;
            if self.acked_above.remove(&next) {
                self.acked = next;
                continue;
            }
            match self.lost.front() {
                Some(&(_, to)) if to <= self.acked => {
                    self.lost.pop_front();
                }
                Some(&(from, to)) if from <= next => {
                    self.acked = to;
                    self.lost.pop_front();
                }
                _ => break,
            }
        }
        self.acked != before
    }

    fn read_segment_index(&self) -> Option<usize> {
        match self.read.segment_first_id {
            None => (!self.segments.is_empty()).then_some(0),
            Some(first) => self
                .segments
                .iter()
                .position(|s| s.first_id == first)
                // The segment was evicted: go on from the oldest left.
                .or_else(|| (!self.segments.is_empty()).then_some(0)),
        }
    }

    fn segment_of_mut(&mut self, id: u64) -> Option<&mut Segment> {
        self.segments
            .iter_mut()
            .rev()
            .find(|s| s.first_id <= id && id <= s.last_id.max(s.first_id))
    }

    /// The record at `offset` of segment `idx` failed its check on read: the reader goes on
    /// from the next good record of the segment (found as the recovery scan does), or past
    /// its end. Counted in [`SpoolStatus::damaged_reads`].
    fn resync(&mut self, idx: usize, offset: u64) -> Result<(), SpoolError> {
        self.damaged_reads += 1;
        let seg = &self.segments[idx];
        let (path, end) = (seg.path.clone(), seg.bytes);
        let mut rest = Vec::new();
        if let Some(file) = self.read.file.as_mut() {
            file.seek(SeekFrom::Start(offset + 1))
                .and_then(|_| {
                    file.take(end.saturating_sub(offset + 1))
                        .read_to_end(&mut rest)
                })
                .map_err(|e| SpoolError::io("read", &path, e))?;
        }
        let (found, _, _) = scan_segment(&rest, self.opts.max_payload());
        match found.first() {
            Some(f) => self.read.offset = offset + 1 + f.offset,
            None => {
                // Nothing good is left in it: what it still claimed unread is lost.
                let seg = &mut self.segments[idx];
                seg.unread_records = 0;
                seg.unread_events = 0;
                self.read.offset = end;
            }
        }
        Ok(())
    }

    fn write_watermark(&mut self) -> Result<(), SpoolError> {
        let slot = ack_slot_bytes(self.acked);
        let at = self.ack_slot * ACK_SLOT_BYTES;
        self.ack_slot ^= 1;
        let path = self.dir.join(ACK_FILE);
        self.ack_file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.ack_file.write_all(&slot))
            .map_err(|e| SpoolError::io("write watermark to", &path, e))?;
        self.unsynced = true;
        Ok(())
    }

    /// Deletes the oldest segments whose records are all at or below the watermark. The
    /// watermark is synced first, so a crash never leaves records unaccounted for.
    fn delete_done_segments(&mut self) -> Result<(), SpoolError> {
        let done = |s: &Segment, acked: u64| s.last_id <= acked && s.bytes > 0;
        if !self.segments.front().is_some_and(|s| done(s, self.acked)) {
            return Ok(());
        }
        let path = self.dir.join(ACK_FILE);
        self.ack_file
            .sync_data()
            .map_err(|e| SpoolError::io("sync", &path, e))?;
        while let Some(s) = self.segments.front() {
            if !done(s, self.acked) {
                break;
            }
            let is_writer = self.segments.len() == 1;
            let path = s.path.clone();
            std::fs::remove_file(&path)
                .map_err(|e| SpoolError::io("delete drained segment", &path, e))?;
            self.segments.pop_front();
            if is_writer {
                // The next append starts a new segment.
                self.writer = None;
            }
        }
        Ok(())
    }

    /// Makes room for `needed` bytes under the budget, by the `when_full` policy. Returns the
    /// records and unread events deleted.
    fn make_room(&mut self, needed: u64) -> Result<(u64, u64, u64), SpoolError> {
        let (mut records, mut events, mut through) = (0u64, 0u64, 0u64);
        while self.bytes() + needed > self.opts.max_bytes {
            let can_evict = self.opts.when_full == WhenFull::DropOldest && self.segments.len() > 1;
            if !can_evict {
                return Err(SpoolError::Full {
                    needed,
                    used: self.bytes(),
                    max: self.opts.max_bytes,
                });
            }
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            // Records of it that were read are in flight: their owner accounts for them. The
            // unread ones are lost here, and reported.
            records += s.unread_records;
            events += s.unread_events;
            through = through.max(s.last_id);
            self.acked = self.acked.max(s.last_id);
            self.acked_above.retain(|&id| id > s.last_id);
            let acked = self.acked;
            self.in_flight.retain(|&id, _| id > acked);
            self.write_watermark()?;
            let path = self.dir.join(ACK_FILE);
            self.ack_file
                .sync_data()
                .map_err(|e| SpoolError::io("sync", &path, e))?;
            std::fs::remove_file(&s.path)
                .map_err(|e| SpoolError::io("delete evicted segment", &s.path, e))?;
        }
        Ok((records, events, through))
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        // A writer segment with no good record (a failed first write) is reused by name.
        if let Some(s) = self.segments.back() {
            if s.bytes == 0 {
                if let Some(s) = self.segments.pop_back() {
                    let _ = std::fs::remove_file(&s.path);
                }
            }
        }
        let path = self.dir.join(segment_name(self.next_id));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::io("create segment", &path, e))?;
        if self.opts.sync == SyncPolicy::Always {
            // The new file's name must survive a power loss too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        self.segments.push_back(Segment::empty(self.next_id, path));
        self.writer = Some(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max_bytes: u64, segment_bytes: u64, when_full: WhenFull) -> SpoolOptions {
        SpoolOptions {
            max_bytes,
            segment_bytes,
            sync: SyncPolicy::Never,
            when_full,
        }
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 20, 4096, WhenFull::DropNewest);
        {
            let (mut s, r) = DiskSpool::open(dir.path(), o.clone()).unwrap();
            assert_eq!(r, Recovery::default());
            for i in 0..50u32 {
                s.append(i, &vec![i as u8; 100 + i as usize]).unwrap();
            }
            for i in 0..20u32 {
                let rec = s.read_next().unwrap().unwrap();
                assert_eq!(rec.events, i);
                s.ack(rec.id).unwrap();
            }
            // Read but not acknowledged: comes back after the reopen.
            let _ = s.read_next().unwrap().unwrap();
        }
        let (mut s, r) = DiskSpool::open(dir.path(), o).unwrap();
        assert_eq!(r.records, 30);
        assert_eq!(r.events, (20..50).sum::<u64>());
        for i in 20..50u32 {
            let rec = s.read_next().unwrap().unwrap();
            assert_eq!((rec.events, rec.payload.len()), (i, 100 + i as usize));
            s.ack(rec.id).unwrap();
        }
        assert!(s.read_next().unwrap().is_none());
        // Every segment but the writer's is gone, and it too once drained.
        assert_eq!(s.status().segments, 0, "{:?}", s.status());
        assert_eq!(s.bytes(), ACK_FILE_BYTES);
    }

    #[test]
    fn a_second_spool_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 20, 4096, WhenFull::DropNewest);
        let (_s, _) = DiskSpool::open(dir.path(), o.clone()).unwrap();
        let err = DiskSpool::open(dir.path(), o).unwrap_err();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
    }

    #[test]
    fn the_budget_holds_and_each_policy_does_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) =
            DiskSpool::open(dir.path(), opts(10_000, 2_000, WhenFull::DropNewest)).unwrap();
        let mut refused = 0;
        for _ in 0..100 {
            match s.append(1, &[7; 468]) {
                Ok(_) => {}
                Err(SpoolError::Full { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(s.bytes() <= 10_000);
        }
        assert!(refused > 70, "{refused}");
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) =
            DiskSpool::open(dir.path(), opts(10_000, 2_000, WhenFull::DropOldest)).unwrap();
        let mut evicted = 0;
        for _ in 0..100 {
            evicted += s.append(1, &[7; 468]).unwrap().evicted_events;
            assert!(s.bytes() <= 10_000);
        }
        assert_eq!(evicted + s.status().events, 100);
        // The newest survive.
        let first = s.read_next().unwrap().unwrap();
        assert!(first.id > 80, "{}", first.id);
    }

    #[test]
    fn a_torn_tail_and_a_flipped_byte_are_skipped_and_counted_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 20, 1 << 20, WhenFull::DropNewest);
        {
            let (mut s, _) = DiskSpool::open(dir.path(), o.clone()).unwrap();
            for i in 0..10u32 {
                s.append(2, format!("record {i}").as_bytes()).unwrap();
            }
        }
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .unwrap()
            .path();
        let mut data = std::fs::read(&seg).unwrap();
        let rec = HEADER_BYTES + "record 0".len();
        // Flip a payload byte of record 3, and tear record 9 after its header.
        data[3 * rec + HEADER_BYTES + 2] ^= 0x40;
        data.truncate(9 * rec + HEADER_BYTES + 3);
        std::fs::write(&seg, &data).unwrap();
        let (mut s, r) = DiskSpool::open(dir.path(), o).unwrap();
        assert_eq!(r.records, 8, "{r:?}");
        // Record 3 (its checksum) and record 9 (torn, its header still readable).
        assert_eq!(r.corrupt_records, 2, "{r:?}");
        assert_eq!(r.corrupt_events, 4, "{r:?}");
        assert_eq!(r.skipped_bytes as usize, rec + HEADER_BYTES + 3, "{r:?}");
        let mut got = Vec::new();
        while let Some(rec) = s.read_next().unwrap() {
            got.push(String::from_utf8(rec.payload).unwrap());
            s.ack(rec.id).unwrap();
        }
        let want: Vec<String> = [0, 1, 2, 4, 5, 6, 7, 8]
            .iter()
            .map(|i| format!("record {i}"))
            .collect();
        assert_eq!(got, want);
        // Appends continue after the cut tail.
        s.append(1, b"after").unwrap();
        assert_eq!(s.read_next().unwrap().unwrap().payload, b"after");
    }
}
