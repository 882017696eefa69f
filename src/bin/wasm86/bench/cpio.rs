//! Reading files out of a gzip'd newc cpio archive (an initramfs).

use std::io::Read;

/// One archive member: its path (without a leading `/`), mode and contents.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// The members of a gzip'd (or plain) newc cpio archive, up to the `TRAILER!!!` entry.
pub fn read(archive: &[u8]) -> Result<Vec<Entry>, String> {
    let raw = if archive.starts_with(&[0x1F, 0x8B]) {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(archive)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not a valid gzip stream: {e}"))?;
        raw
    } else {
        archive.to_vec()
    };
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let header = raw
            .get(at..at + 110)
            .ok_or_else(|| format!("cpio: truncated header at byte {at}"))?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(format!("cpio: not a newc header at byte {at}"));
        }
        let field = |i: usize| -> Result<usize, String> {
            let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap_or("");
            usize::from_str_radix(hex, 16)
                .map_err(|_| format!("cpio: bad header field {i} at byte {at}"))
        };
        let mode = field(1)? as u32;
        let size = field(6)?;
        let namesize = field(11)?;
        let name_end = at + 110 + namesize;
        let name = raw
            .get(at + 110..name_end.saturating_sub(1))
            .ok_or_else(|| format!("cpio: truncated name at byte {at}"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let data = raw
            .get(data_start..data_start + size)
            .ok_or_else(|| format!("cpio: {name}: truncated data"))?
            .to_vec();
        at = (data_start + size).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        let name = name.trim_start_matches("./").trim_start_matches('/');
        entries.push(Entry {
            name: name.to_string(),
            mode,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        )
        .into_bytes();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn reads_members_up_to_the_trailer() {
        let mut a = member("bench", 0o40755, b"");
        a.extend(member("/bench/run", 0o100755, b"#!/bin/sh\n"));
        a.extend(member("TRAILER!!!", 0, b""));
        let e = read(&a).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].name, "bench/run");
        assert_eq!(e[1].mode, 0o100755);
        assert_eq!(e[1].data, b"#!/bin/sh\n");
    }

    #[test]
    fn rejects_what_is_not_cpio() {
        assert!(read(b"hello").unwrap_err().contains("truncated"));
        let mut a = member("x", 0o100644, b"abc");
        a[0] = b'1';
        assert!(read(&a).unwrap_err().contains("not a newc header"));
        let a = member("x", 0o100644, b"abc");
        assert!(read(&a[..a.len() - 8]).unwrap_err().contains("truncated"));
    }
}
