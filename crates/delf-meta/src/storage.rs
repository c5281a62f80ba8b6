//! The durable Raft storage of one coordinator, in its data folder:
//!
//! - `raft.wal`: an append-only log of records `[len u32][crc32 u32][kind u8][protobuf]` (little-endian): log
//!   entries, hard states and configuration states. Every batch of a Ready is written and fsynced before the
//!   messages that depend on it are sent. On restart the records are replayed; a torn last record (the process died
//!   mid-write: nothing whole after it) is cut off; a damaged record with a whole one anywhere after it is
//!   [`MetaError::DamagedLog`], and the coordinator does not start (what follows may hold acknowledged entries
//!   and votes, which a member must never forget).
//! - `snapshot.bin`: the latest snapshot (`[crc32 u32][protobuf]`: state machine + index, term, voters), written
//!   to a temporary file, fsynced and renamed. Taking one rewrites `raft.wal` without the entries it covers.
//!
//! The log is also kept in memory (the metadata is small) and served to raft-rs through [`raft::Storage`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::MetaError;

const WAL: &str = "raft.wal";
const SNAPSHOT: &str = "snapshot.bin";
const LOCK: &str = "LOCK";
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const CONF_STATE: u8 = 3;
/// Largest record accepted when reading back (a metadata entry is KBs).
const MAX_RECORD: usize = 64 << 20;

/// Raft log, hard state, configuration and snapshot, durable on disk.
pub struct DiskStorage {
    dir: PathBuf,
    /// Held (exclusively locked) while open: two processes never write one folder.
    _lock: File,
    wal: File,
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically and durably ([`delf_core::durable`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MetaError> {
    delf_core::durable::write_atomic(path, bytes).map_err(io(path))
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(kind);
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    // Encoding a well-formed message into memory cannot fail.
    m.write_to_bytes().unwrap_or_default()
}

/// Splits a WAL into records; returns them and the length of the readable prefix (a torn tail is not included).
/// The whole record at `at`, if one is there: (kind, payload, its length with the header).
fn record_at(bytes: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(body) == crc).then(|| (body[0], &body[1..], 8 + len))
}

/// The records up to the first that is not whole, and where that one starts.
fn read_records(bytes: &[u8]) -> (Vec<(u8, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((kind, payload, len)) = record_at(bytes, at) {
        out.push((kind, payload));
        at += len;
    }
    (out, at)
}

/// Where a whole record starts after the bad one at `bad`, if anywhere: then the damage is in the middle of the
/// log, not a torn last write, and cutting there would drop records that were fsynced and acknowledged.
fn valid_record_after(bytes: &[u8], bad: usize) -> Option<usize> {
    (bad + 1..bytes.len().saturating_sub(8)).find(|&at| record_at(bytes, at).is_some())
}

impl DiskStorage {
    /// Opens the storage in `dir`, creating it empty if it holds nothing. Returns whether it held a Raft state.
    pub fn open(dir: &Path) -> Result<(Self, bool), MetaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        lock.try_lock().map_err(|_| {
            MetaError::Config(format!(
                "{} is in use by another coordinator (two processes must never share a Raft folder)",
                dir.display()
            ))
        })?;
        let snap_path = dir.join(SNAPSHOT);
        let mut snapshot = Snapshot::default();
        let mut existed = false;
        if snap_path.exists() {
            let bytes = std::fs::read(&snap_path).map_err(io(&snap_path))?;
            let corrupt = |reason: &str| MetaError::Corrupt { path: snap_path.clone(), reason: reason.into() };
            if bytes.len() < 4 {
                return Err(corrupt("shorter than its checksum"));
            }
            let crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if crc32fast::hash(&bytes[4..]) != crc {
                return Err(corrupt("checksum mismatch"));
            }
            snapshot = Snapshot::parse_from_bytes(&bytes[4..]).map_err(|e| corrupt(&e.to_string()))?;
            existed = true;
        }
        let wal_path = dir.join(WAL);
        let mut bytes = Vec::new();
        if wal_path.exists() {
            File::open(&wal_path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(&wal_path))?;
        }
        let (records, good) = read_records(&bytes);
        let mut s = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            wal: File::options().create(true).append(true).open(&wal_path).map_err(io(&wal_path))?,
            entries: Vec::new(),
            hard_state: HardState::default(),
            conf_state: snapshot.get_metadata().get_conf_state().clone(),
            snapshot,
        };
        s.hard_state.term = s.snapshot.get_metadata().term;
        s.hard_state.commit = s.snapshot.get_metadata().index;
        let corrupt = |reason: String| MetaError::Corrupt { path: wal_path.clone(), reason };
        for (kind, payload) in records {
            existed = true;
            match kind {
                ENTRY => {
                    let e = Entry::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
                    s.put_entry(e).map_err(corrupt)?;
                }
                HARD_STATE => {
                    s.hard_state = HardState::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?
                }
                CONF_STATE => {
                    s.conf_state = ConfState::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?
                }
                k => return Err(corrupt(format!("unknown record kind {k}"))),
            }
        }
        if let Some(next) = (good < bytes.len()).then(|| valid_record_after(&bytes, good)).flatten() {
            return Err(MetaError::DamagedLog { path: wal_path, offset: good as u64, next: next as u64 });
        }
        if good < bytes.len() {
            tracing::warn!(path = %wal_path.display(), kept = good, dropped = bytes.len() - good, "cut a torn WAL tail");
            let f = OpenOptions::new().write(true).open(&wal_path).map_err(io(&wal_path))?;
            f.set_len(good as u64).and_then(|()| f.sync_all()).map_err(io(&wal_path))?;
        }
        // Never commit beyond what the log holds.
        s.hard_state.commit = s.hard_state.commit.min(s.last());
        Ok((s, existed))
    }

    /// Starts a new group: an initial snapshot at index 1, term 1, with `voters` and the state `data` (every
    /// bootstrapping coordinator writes the same one, as raft-rs' `MemStorage::initialize_with_conf_state`).
    pub fn bootstrap(&mut self, voters: Vec<u64>, data: Vec<u8>) -> Result<(), MetaError> {
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.mut_conf_state().voters = voters;
        self.install_snapshot(snap)?;
        let hs = HardState { term: 1, commit: 1, ..HardState::default() };
        self.persist(&[], Some(&hs))
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    /// Appends `e`, dropping any conflicting suffix (a new leader overwrote it).
    fn put_entry(&mut self, e: Entry) -> Result<(), String> {
        if e.index < self.first() {
            return Ok(());
        }
        if e.index > self.last() + 1 {
            return Err(format!("entry {} leaves a gap after {}", e.index, self.last()));
        }
        let keep = (e.index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.push(e);
        Ok(())
    }

    /// Stores entries and the hard state durably (one write, one fsync).
    pub fn persist(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), MetaError> {
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            buf.extend(record(ENTRY, &encode(e)));
        }
        if let Some(hs) = hs {
            buf.extend(record(HARD_STATE, &encode(hs)));
        }
        let path = self.dir.join(WAL);
        self.wal.write_all(&buf).and_then(|()| self.wal.sync_data()).map_err(io(&path))?;
        for e in entries {
            let e = e.clone();
            self.put_entry(e).map_err(|reason| MetaError::Corrupt { path: path.clone(), reason })?;
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a new commit index (no fsync: after a crash Raft learns it again from the leader).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), MetaError> {
        self.hard_state.commit = commit;
        let path = self.dir.join(WAL);
        self.wal.write_all(&record(HARD_STATE, &encode(&self.hard_state))).map_err(io(&path))
    }

    /// Stores the voters after a membership change, durably.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), MetaError> {
        let path = self.dir.join(WAL);
        self.wal.write_all(&record(CONF_STATE, &encode(&cs))).and_then(|()| self.wal.sync_data()).map_err(io(&path))?;
        self.conf_state = cs;
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log (as raft-rs' `MemStorage`).
    pub fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), MetaError> {
        self.entries.clear();
        self.keep_snapshot(snap)
    }

    /// Stores `snap` as the latest snapshot and drops the entries it covers.
    fn keep_snapshot(&mut self, snap: Snapshot) -> Result<(), MetaError> {
        let index = snap.get_metadata().index;
        let mut bytes = Vec::new();
        let body = encode(&snap);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        write_atomic(&self.dir.join(SNAPSHOT), &bytes)?;
        self.entries.retain(|e| e.index > index);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        self.conf_state = snap.get_metadata().get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(snap.get_metadata().term);
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.snapshot = snap;
        self.rewrite_wal()
    }

    /// Takes a snapshot of the state machine at `index` (applied here) and drops the log it covers.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), MetaError> {
        let term = raft::Storage::term(self, index)?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.keep_snapshot(snap)
    }

    /// Rewrites the WAL with what the snapshot does not cover.
    fn rewrite_wal(&mut self) -> Result<(), MetaError> {
        let mut buf = record(HARD_STATE, &encode(&self.hard_state));
        buf.extend(record(CONF_STATE, &encode(&self.conf_state)));
        for e in &self.entries {
            buf.extend(record(ENTRY, &encode(e)));
        }
        let path = self.dir.join(WAL);
        write_atomic(&path, &buf)?;
        self.wal = File::options().append(true).open(&path).map_err(io(&path))?;
        Ok(())
    }

    /// The latest snapshot (taken here or installed).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The voters as stored.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// First index still in the log.
    pub fn first_index_now(&self) -> u64 {
        self.first()
    }
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use raft::Storage as _;

    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        let mut e = Entry { index, term, ..Entry::default() };
        e.set_data(data.as_bytes().to_vec().into());
        e
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState { term, commit, ..HardState::default() }
    }

    #[test]
    fn the_log_survives_a_restart_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, existed) = DiskStorage::open(dir.path()).unwrap();
            assert!(!existed);
            s.bootstrap(vec![1, 2, 3], b"{}".to_vec()).unwrap();
            s.persist(&[entry(2, 1, "a"), entry(3, 1, "b"), entry(4, 1, "c")], Some(&hs(1, 3))).unwrap();
            // A new leader overwrites index 4.
            s.persist(&[entry(4, 2, "c2")], Some(&hs(2, 3))).unwrap();
        }
        let (s, existed) = DiskStorage::open(dir.path()).unwrap();
        assert!(existed);
        assert!(matches!(DiskStorage::open(dir.path()), Err(MetaError::Config(m)) if m.contains("in use")));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 4));
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 3));
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        drop(s);
        // The process dies halfway through a record.
        let wal = dir.path().join(WAL);
        let mut bytes = std::fs::read(&wal).unwrap();
        bytes.extend(&record(ENTRY, &encode(&entry(5, 2, "d")))[..10]);
        std::fs::write(&wal, &bytes).unwrap();
        let (s, _) = DiskStorage::open(dir.path()).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(std::fs::metadata(&wal).unwrap().len() as usize, bytes.len() - 10);
    }

    #[test]
    fn damage_before_a_whole_record_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = DiskStorage::open(dir.path()).unwrap();
            s.bootstrap(vec![1, 2, 3], b"{}".to_vec()).unwrap();
            for i in 2..=6 {
                s.persist(&[entry(i, 1, "acknowledged")], Some(&hs(1, i))).unwrap();
            }
        }
        let wal = dir.path().join(WAL);
        let good = std::fs::read(&wal).unwrap();
        // One flipped bit in a record of the middle: every record after it is still whole.
        let first = record_at(&good, 0).unwrap().2;
        let second = record_at(&good, first).unwrap().2;
        let mut bytes = good.clone();
        bytes[first + second / 2] ^= 0x10;
        std::fs::write(&wal, &bytes).unwrap();
        match DiskStorage::open(dir.path()) {
            Err(e @ MetaError::DamagedLog { .. }) => {
                let MetaError::DamagedLog { offset, next, .. } = &e else { unreachable!() };
                assert_eq!((*offset as usize, *next as usize), (first, first + second));
                let message = e.to_string();
                assert!(message.contains("raft.wal") && message.contains("new id"), "{message}");
            }
            other => panic!("expected a damaged log, got {:?}", other.map(|(s, _)| s.last_index())),
        }
        assert_eq!(std::fs::read(&wal).unwrap(), bytes, "nothing was cut");

        // The same damage in the last record is a torn write: cut, and the node starts with what came before.
        let last = (0..good.len()).filter(|&at| record_at(&good, at).is_some_and(|r| at + r.2 == good.len())).max();
        let mut bytes = good.clone();
        let at = last.unwrap();
        bytes[at + 9] ^= 0x10;
        std::fs::write(&wal, &bytes).unwrap();
        let (s, _) = DiskStorage::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len() as usize, at);
        assert!(s.last_index().unwrap() >= 5);
    }

    #[test]
    fn a_snapshot_compacts_the_log_and_is_served_to_raft() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = DiskStorage::open(dir.path()).unwrap();
        s.bootstrap(vec![1], b"{}".to_vec()).unwrap();
        let entries: Vec<Entry> = (2..=10).map(|i| entry(i, 1, "x")).collect();
        s.persist(&entries, Some(&hs(1, 10))).unwrap();
        s.compact(8, b"state at 8".to_vec()).unwrap();
        assert_eq!(s.first_index().unwrap(), 9);
        assert!(matches!(
            s.entries(5, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.term(8).unwrap(), 1);
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!((snap.get_metadata().index, &snap.data[..]), (8, &b"state at 8"[..]));
        drop(s);
        let (s, _) = DiskStorage::open(dir.path()).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (9, 10));
        assert_eq!(&s.snapshot_ref().data[..], b"state at 8");
        drop(s);
        // A damaged snapshot is an error, not an empty state.
        let path = dir.path().join(SNAPSHOT);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(DiskStorage::open(dir.path()), Err(MetaError::Corrupt { .. })));
    }
}
