//! The reader side: the image read or decompressed into 4 MiB buffers, hashing what the bmap
//! gives no checksum for.

use super::{Check, Compression, Expect, Source, CHUNK};
use crate::bmap::BLOCK_SIZE;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

pub(crate) fn open_stream(image: &Path, comp: Compression) -> Result<Box<dyn Read + Send>> {
    let f = File::open(image).with_context(|| format!("open image {}", image.display()))?;
    let r = std::io::BufReader::with_capacity(1 << 20, f);
    Ok(match comp {
        Compression::None => Box::new(r),
        Compression::Gz => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .memlimit_stop(u64::MAX)
                .decoder()
                .context("set up the xz decoder")?;
            Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
        }
    })
}

/// Fill `buf` from `r`; returns bytes read (less than `buf.len()` only at end of stream).
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A filled buffer for image offset `off`; `segs` are the `[start, end)` parts to write.
pub(super) struct Job {
    pub(super) off: u64,
    pub(super) buf: Vec<u8>,
    pub(super) segs: Vec<(usize, usize)>,
}

/// Reader side: send buffers to write; return (image size, checks hashed while reading).
pub(super) fn produce(
    src: &Source,
    raw: Option<&File>,
    skip_zero: bool,
    tx: mpsc::SyncSender<Job>,
    free: mpsc::Receiver<Vec<u8>>,
) -> Result<(u64, Vec<Check>)> {
    let image = src.image;
    let get = || free.recv().map_err(|_| anyhow!("writer stopped"));
    let send = |j: Job| tx.send(j).map_err(|_| anyhow!("writer stopped"));
    let mut checks = Vec::new();
    if let Some(b) = src.bmap {
        let mut stream = match src.comp {
            Compression::None => None,
            c => Some(open_stream(image, c)?),
        };
        let mut pos = 0u64; // stream position
        let mut skip = vec![0u8; 1 << 20];
        for r in &b.ranges {
            let (off, len) = r.byte_span(b.block_size, b.image_size);
            let mut h = Sha256::new();
            if let Some(st) = stream.as_mut() {
                while pos < off {
                    let n = ((off - pos) as usize).min(skip.len());
                    let k = read_full(st.as_mut(), &mut skip[..n])
                        .with_context(|| format!("decompress {}", image.display()))?;
                    if k == 0 {
                        bail!(
                            "{} ends at {pos} bytes, before its bmap's data",
                            image.display()
                        );
                    }
                    pos += k as u64;
                }
            }
            let mut done = 0u64;
            while done < len {
                let mut buf = get()?;
                let n = ((len - done) as usize).min(CHUNK);
                let at = off + done;
                if let Some(st) = stream.as_mut() {
                    let k = read_full(st.as_mut(), &mut buf[..n])
                        .with_context(|| format!("decompress {}", image.display()))?;
                    if k < n {
                        bail!(
                            "{} ends at {} bytes, before its bmap's data",
                            image.display(),
                            at + k as u64
                        );
                    }
                    pos += n as u64;
                } else if let Some(f) = raw {
                    f.read_exact_at(&mut buf[..n], at)
                        .with_context(|| format!("read {} at {at}", image.display()))?;
                }
                if r.sha256.is_empty() {
                    h.update(&buf[..n]);
                }
                send(Job {
                    off: at,
                    buf,
                    segs: vec![(0, n)],
                })?;
                done += n as u64;
            }
            let expect = if r.sha256.is_empty() {
                Expect::Sha(hex::encode(h.finalize()))
            } else {
                Expect::Sha(r.sha256.clone())
            };
            checks.push(Check { off, len, expect });
        }
        return Ok((b.image_size, checks));
    }
    // No bmap (compressed): stream everything, dropping all-zero blocks for files.
    let mut st = open_stream(image, src.comp)?;
    let mut pos = 0u64;
    loop {
        let mut buf = get()?;
        let k = read_full(st.as_mut(), &mut buf[..CHUNK])
            .with_context(|| format!("decompress {}", image.display()))?;
        if k == 0 {
            break;
        }
        let mut segs: Vec<(usize, usize)> = Vec::new();
        if skip_zero {
            let bs = BLOCK_SIZE as usize;
            let mut i = 0;
            while i < k {
                let e = (i + bs).min(k);
                if buf[i..e].iter().any(|&b| b != 0) {
                    match segs.last_mut() {
                        Some(s) if s.1 == i => s.1 = e,
                        _ => segs.push((i, e)),
                    }
                }
                i = e;
            }
        } else {
            segs.push((0, k));
        }
        for &(a, e) in &segs {
            checks.push(Check {
                off: pos + a as u64,
                len: (e - a) as u64,
                expect: Expect::Sha(hex::encode(Sha256::digest(&buf[a..e]))),
            });
        }
        send(Job {
            off: pos,
            buf,
            segs,
        })?;
        pos += k as u64;
        if k < CHUNK {
            break;
        }
    }
    Ok((pos, checks))
}
