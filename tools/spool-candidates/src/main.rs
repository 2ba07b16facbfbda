//! Compares three ways to keep the spool's records on disk, on the same machine in one run:
//! the segment log of `src/spool` (ours), SQLite through rusqlite (WAL), and redb.
//!
//! ```text
//! cargo run --release --manifest-path tools/spool-candidates/Cargo.toml -- [RECORDS] [BYTES]
//! cargo run --release --manifest-path tools/spool-candidates/Cargo.toml -- kill [ROUNDS]
//! ```
//!
//! Throughput: append RECORDS records of BYTES bytes (default 20,000 × 16 KiB, about an encoded
//! batch of 64 spans), then drain them (read in order, acknowledge/delete one by one); once
//! with no sync per append (each design's "sync later" mode), once with a sync per append
//! on a tenth of the records. Reports MB/s, the files' peak size and their size after the
//! drain (is the space given back?).
//!
//! `kill`: a child process appends as fast as it can and reports each append after it
//! returns; the parent SIGKILLs it at a random moment and reopens: records reported but not
//! found are lost, per design.

use std::path::Path;

use redb::{ReadableTable, ReadableTableMetadata};
use std::time::{Duration, Instant};

use telemetry_gateway::testing::internals::{DiskSpool, SpoolOptions, SyncPolicy, WhenFull};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

trait Candidate {
    fn name(&self) -> &'static str;
    fn append(&mut self, events: u32, payload: &[u8]) -> Result<()>;
    /// Reads the oldest record and deletes it; `None` when empty.
    fn pop(&mut self) -> Result<Option<Vec<u8>>>;
    fn flush(&mut self) -> Result<()>;
    /// Every id it still holds, in order (for the kill test).
    fn all_lengths(&mut self) -> Result<usize>;
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

struct Ours {
    spool: DiskSpool,
}

impl Ours {
    fn open(dir: &Path, sync_each: bool) -> Result<Self> {
        let opts = SpoolOptions {
            max_bytes: 64 << 30,
            segment_bytes: 64 << 20,
            sync: if sync_each {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            },
            when_full: WhenFull::DropNewest,
        };
        Ok(Ours {
            spool: DiskSpool::open(dir, opts)?.0,
        })
    }
}

impl Candidate for Ours {
    fn name(&self) -> &'static str {
        "segment log (ours)"
    }
    fn append(&mut self, events: u32, payload: &[u8]) -> Result<()> {
        self.spool.append(events, payload)?;
        Ok(())
    }
    fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        match self.spool.read_next()? {
            Some(r) => {
                self.spool.ack(r.id)?;
                Ok(Some(r.payload))
            }
            None => Ok(None),
        }
    }
    fn flush(&mut self) -> Result<()> {
        Ok(self.spool.sync()?)
    }
    fn all_lengths(&mut self) -> Result<usize> {
        let mut n = 0;
        while self.spool.read_next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    fn open(dir: &Path, sync_each: bool) -> Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("spool.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            if sync_each { "FULL" } else { "NORMAL" },
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, events INTEGER, payload BLOB)",
        )?;
        Ok(Sqlite { conn })
    }
}

impl Candidate for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite (rusqlite, WAL)"
    }
    fn append(&mut self, events: u32, payload: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO spool (events, payload) VALUES (?1, ?2)")?
            .execute(rusqlite::params![events, payload])?;
        Ok(())
    }
    fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        let row: Option<(i64, Vec<u8>)> = {
            let mut st = self
                .conn
                .prepare_cached("SELECT id, payload FROM spool ORDER BY id LIMIT 1")?;
            let mut rows = st.query([])?;
            match rows.next()? {
                Some(r) => Some((r.get(0)?, r.get(1)?)),
                None => None,
            }
        };
        match row {
            Some((id, p)) => {
                self.conn
                    .prepare_cached("DELETE FROM spool WHERE id = ?1")?
                    .execute([id])?;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }
    fn flush(&mut self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
    fn all_lengths(&mut self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))?
            as usize)
    }
}

const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("spool");

struct Redb {
    db: redb::Database,
    next: u64,
    durability: redb::Durability,
}

impl Redb {
    fn open(dir: &Path, sync_each: bool) -> Result<Self> {
        let db = redb::Database::create(dir.join("spool.redb"))?;
        let next = {
            let tx = db.begin_write()?;
            let next = {
                let t = tx.open_table(TABLE)?;
                let last = t.last()?.map(|(k, _)| k.value());
                last.map_or(1, |k| k + 1)
            };
            tx.commit()?;
            next
        };
        Ok(Redb {
            db,
            next,
            durability: if sync_each {
                redb::Durability::Immediate
            } else {
                redb::Durability::Eventual
            },
        })
    }
}

impl Candidate for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn append(&mut self, _events: u32, payload: &[u8]) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability);
        {
            let mut t = tx.open_table(TABLE)?;
            t.insert(self.next, payload)?;
        }
        tx.commit()?;
        self.next += 1;
        Ok(())
    }
    fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability);
        let out = {
            let mut t = tx.open_table(TABLE)?;
            let first = t.pop_first()?;
            first.map(|(_, v)| v.value().to_vec())
        };
        tx.commit()?;
        Ok(out)
    }
    fn flush(&mut self) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate);
        tx.commit()?;
        Ok(())
    }
    fn all_lengths(&mut self) -> Result<usize> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        Ok(t.len()? as usize)
    }
}

fn open(which: usize, dir: &Path, sync_each: bool) -> Result<Box<dyn Candidate>> {
    Ok(match which {
        0 => Box::new(Ours::open(dir, sync_each)?),
        1 => Box::new(Sqlite::open(dir, sync_each)?),
        _ => Box::new(Redb::open(dir, sync_each)?),
    })
}

fn throughput(records: usize, bytes: usize) -> Result<()> {
    let payload: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mb = (records * bytes) as f64 / 1e6;
    println!(
        "| design | sync | records × bytes | append MB/s | drain MB/s | peak on disk | after drain |"
    );
    println!("|---|---|---|---|---|---|---|");
    for sync_each in [false, true] {
        let n = if sync_each { records / 10 } else { records };
        let mb = if sync_each { mb / 10.0 } else { mb };
        for which in 0..3 {
            let dir = tempfile::tempdir()?;
            let mut c = open(which, dir.path(), sync_each)?;
            let t = Instant::now();
            for _ in 0..n {
                c.append(64, &payload)?;
            }
            c.flush()?;
            let append = t.elapsed();
            let peak = dir_bytes(dir.path());
            let t = Instant::now();
            let mut drained = 0;
            while let Some(p) = c.pop()? {
                assert_eq!(p.len(), bytes);
                drained += 1;
            }
            c.flush()?;
            let drain = t.elapsed();
            assert_eq!(drained, n);
            let after = dir_bytes(dir.path());
            println!(
                "| {} | {} | {n} × {bytes} | {:.0} | {:.0} | {:.1} MB | {:.1} MB |",
                c.name(),
                if sync_each { "each append" } else { "later" },
                mb / append.as_secs_f64(),
                mb / drain.as_secs_f64(),
                peak as f64 / 1e6,
                after as f64 / 1e6
            );
        }
    }
    Ok(())
}

const CHILD: &str = "SPOOL_CANDIDATES_CHILD";

fn child(which: usize, dir: &Path) -> Result<()> {
    use std::io::Write;
    let mut c = open(which, dir, false)?;
    let payload = vec![7u8; 4096];
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for n in 0u64.. {
        c.append(1, &payload)?;
        writeln!(out, "{n}")?;
        out.flush()?;
    }
    Ok(())
}

fn kill(rounds: usize) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe()?;
    println!("| design | kills | records reported appended | recovered | lost | reopen failures |");
    println!("|---|---|---|---|---|---|");
    for which in 0..3 {
        let dir = tempfile::tempdir()?;
        let (mut reported, mut lost, mut failures) = (0usize, 0usize, 0usize);
        let mut recovered = 0;
        let mut name = "";
        for round in 0..rounds {
            let mut ch = std::process::Command::new(&exe)
                .env(CHILD, format!("{which}:{}", dir.path().display()))
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            let out = ch.stdout.take().ok_or("no stdout")?;
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut n = 0usize;
                for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if l == "ready" {
                        let _ = tx.send(());
                    } else {
                        n += 1;
                    }
                }
                n
            });
            rx.recv_timeout(Duration::from_secs(30))?;
            std::thread::sleep(Duration::from_millis(30 + (round as u64 * 37) % 200));
            ch.kill()?;
            ch.wait()?;
            reported += reader.join().map_err(|_| "reader")?;
            match open(which, dir.path(), false) {
                Ok(mut c) => {
                    name = c.name();
                    recovered = c.all_lengths()?;
                    if recovered < reported {
                        lost = reported - recovered;
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("reopen failed: {e}");
                }
            }
        }
        println!("| {name} | {rounds} | {reported} | {recovered} | {lost} | {failures} |");
    }
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(v) = std::env::var(CHILD) {
        let (which, dir) = v.split_once(':').ok_or("child spec")?;
        return child(which.parse()?, Path::new(dir));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("kill") {
        return kill(args.get(1).map_or(Ok(20), |r| r.parse())?);
    }
    let records = args.first().map_or(Ok(20_000), |r| r.parse())?;
    let bytes = args.get(1).map_or(Ok(16 * 1024), |b| b.parse())?;
    throughput(records, bytes)
}
