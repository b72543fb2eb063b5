//! The spill file: records the database could not take, one JSON line each, append-only.
//!
//! Appends are fsynced before the writer moves on, so a spilled batch survives a crash of the
//! process and of the machine. A line torn by a crash mid-append is skipped on replay (it was
//! never acknowledged as spilled). Blocking file I/O: callers run these on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use super::Record;

/// The file and the lock that keeps appends and replays apart.
#[derive(Debug)]
pub struct SpillFile {
    path: PathBuf,
    lock: Mutex<()>,
}

impl SpillFile {
    /// The spill file at `path` (created on first append).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Appends `records` and syncs them to disk.
    pub fn append(&self, records: &[Record]) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(records.len() * 512);
        for record in records {
            serde_json::to_writer(&mut text, record)?;
            text.push(b'\n');
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&text)?;
        file.sync_data()
    }

    /// Size in bytes (0 when there is no file).
    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Reads up to `max` records starting at byte `offset`. Lines that do not parse (a torn
    /// last line) are skipped and counted. Only the writer task reads, and it never appends
    /// while it replays, so offsets stay valid between calls.
    pub fn read_chunk(&self, offset: u64, max: usize) -> std::io::Result<Chunk> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Chunk {
                    next_offset: offset,
                    at_end: true,
                    ..Chunk::default()
                });
            }
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut chunk = Chunk {
            next_offset: offset,
            ..Chunk::default()
        };
        let mut line = String::new();
        while chunk.records.len() < max {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                chunk.at_end = true;
                break;
            }
            chunk.next_offset += read as u64;
            match serde_json::from_str::<Record>(line.trim_end()) {
                Ok(record) => chunk.records.push(record),
                Err(_) => chunk.skipped += 1,
            }
        }
        Ok(chunk)
    }

    /// Removes the file once every record in it is stored.
    pub fn remove(&self) -> std::io::Result<()> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Records read from the spill file.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<Record>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Lines that did not parse.
    pub skipped: u64,
    /// Whether the end of the file was reached.
    pub at_end: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.to_owned(),
            ..Record::default()
        }
    }

    fn read_all(spill: &SpillFile, max: usize) -> (Vec<Vec<String>>, u64) {
        let (mut offset, mut chunks, mut skipped) = (0, Vec::new(), 0);
        loop {
            let chunk = spill.read_chunk(offset, max).unwrap();
            skipped += chunk.skipped;
            if !chunk.records.is_empty() {
                chunks.push(chunk.records.into_iter().map(|r| r.id).collect());
            }
            offset = chunk.next_offset;
            if chunk.at_end {
                return (chunks, skipped);
            }
        }
    }

    #[test]
    fn appended_records_read_back_in_order_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillFile::new(dir.path().join("sub/spill"));
        assert_eq!(read_all(&spill, 2).0.len(), 0);
        spill.append(&[record("a"), record("b")]).unwrap();
        spill.append(&[record("c")]).unwrap();
        assert_eq!(read_all(&spill, 2).0, [vec!["a", "b"], vec!["c"]]);
        spill.remove().unwrap();
        assert_eq!(spill.len(), 0);
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let spill = SpillFile::new(path.clone());
        spill.append(&[record("a")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"tor")
            .unwrap();
        assert_eq!(read_all(&spill, 10), (vec![vec!["a".to_owned()]], 1));
    }
}
