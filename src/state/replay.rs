//! Recordings: a run of a machine as its starting state and everything the host did to it, so
//! that the run can be replayed exactly. wasm86's machine is deterministic: given the same
//! state and the same calls (how far to run, with which host clock in real-time mode, which
//! input at which instruction), it retires the same instructions and prints the same bytes. A
//! recording is that list of calls; replaying it makes them again and checks, at every input,
//! that the machine is where it was when the input came, so a replay that diverges says at
//! which instruction.
//!
//! # File layout (little-endian)
//!
//! ```text
//! "WASM86RP"  magic
//! u32         format version (VERSION)
//! u32         length of the body, then the body: postcard of `Recording`
//! u32         CRC-32 of everything before it
//! ```

use super::{check_header, crc32, StateError};
use serde::{Deserialize, Serialize};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"WASM86RP";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;

/// One thing the host did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Run the machine for at most `budget` instructions: `Machine::run`, or, with a host
    /// clock reading (ns), `Machine::run_realtime`.
    Run { budget: u64, host_ns: Option<u64> },
    /// A byte taken by serial port `port` when `at` instructions had retired.
    Serial { at: u64, port: u8, byte: u8 },
}

/// A run: where it started, what the host did, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The machine at the start (a state file).
    pub start: Vec<u8>,
    /// Real-time mode (the runs carry host clock readings).
    pub realtime: bool,
    pub events: Vec<Event>,
    /// Instructions retired at the end.
    pub end_instructions: u64,
    /// The serial output of the run (COM1): its length and CRC-32.
    pub output_len: u64,
    pub output_crc: u32,
}

impl Recording {
    /// The file form.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data into a Vec: serialising cannot fail.
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Read the file form, checking its magic, version, length and checksum.
    pub fn from_bytes(file: &[u8]) -> Result<Recording, StateError> {
        check_header(file, MAGIC, VERSION, StateError::NotARecording)?;
        let word = |at: usize| -> Result<u32, StateError> {
            file.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(StateError::Truncated("in the header"))
        };
        let len = word(12)? as usize;
        let end = 16usize
            .checked_add(len)
            .filter(|&e| e + 4 <= file.len())
            .ok_or(StateError::Truncated("inside the recording"))?;
        if end + 4 != file.len() {
            return Err(StateError::Corrupt(format!(
                "{} bytes after the recording",
                file.len() - end - 4
            )));
        }
        if crc32(&file[..end]) != word(end)? {
            return Err(StateError::Checksum);
        }
        postcard::from_bytes(&file[16..end])
            .map_err(|e| StateError::Corrupt(format!("the recording: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recording {
        Recording {
            start: b"a state".to_vec(),
            realtime: false,
            events: vec![
                Event::Run {
                    budget: 2_000_000,
                    host_ns: None,
                },
                Event::Serial {
                    at: 2_000_003,
                    port: 0,
                    byte: b'l',
                },
            ],
            end_instructions: 9,
            output_len: 4,
            output_crc: crc32(b"ls\r\n"),
        }
    }

    #[test]
    fn a_recording_reads_back_and_any_damage_is_an_error() {
        let file = sample().to_bytes();
        assert_eq!(Recording::from_bytes(&file), Ok(sample()));
        for n in 0..file.len() {
            assert!(Recording::from_bytes(&file[..n]).is_err(), "cut at {n}");
        }
        for byte in 0..file.len() {
            let mut f = file.clone();
            f[byte] ^= 0x20;
            assert!(Recording::from_bytes(&f).is_err(), "byte {byte} flipped");
        }
        let mut newer = file.clone();
        newer[8] = 9;
        assert!(matches!(
            Recording::from_bytes(&newer),
            Err(StateError::NewerVersion { found: 9, .. })
        ));
        assert_eq!(
            Recording::from_bytes(b"WASM86STnot a recording"),
            Err(StateError::NotARecording)
        );
    }
}
