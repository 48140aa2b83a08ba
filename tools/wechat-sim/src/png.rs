//! A tiny PNG writer (8-bit grayscale, stored deflate blocks) for the mini-program code images:
//! a QR-like grid derived from the parameters, with the parameters themselves in `tEXt` chunks so
//! that tests can read back what was asked for.

use sha2::{Digest, Sha256};

const MODULES: usize = 21;
const SCALE: usize = 8;

/// A PNG whose pattern and `tEXt` chunks encode `texts` (`scene`, `page`, ...).
pub fn code_image(texts: &[(&str, &str)]) -> Vec<u8> {
    let mut seed = Sha256::new();
    for (k, v) in texts {
        seed.update(k.as_bytes());
        seed.update([0]);
        seed.update(v.as_bytes());
        seed.update([0]);
    }
    let bits = seed.finalize();
    let dark = |x: usize, y: usize| -> bool {
        let finder = |cx: usize, cy: usize| {
            let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
            let ring = dx.max(dy);
            (x < cx + 4 && y < cy + 4) && (ring == 3 || ring <= 1)
        };
        if finder(3, 3) || finder(MODULES - 4, 3) || finder(3, MODULES - 4) {
            return true;
        }
        let near_finder = |cx: usize, cy: usize| x.abs_diff(cx) <= 4 && y.abs_diff(cy) <= 4;
        if near_finder(3, 3) || near_finder(MODULES - 4, 3) || near_finder(3, MODULES - 4) {
            return false;
        }
        let i = (y * MODULES + x) % 256;
        bits[i / 8] >> (i % 8) & 1 == 1
    };
    let side = MODULES * SCALE;
    let mut raw = Vec::with_capacity(side * (side + 1));
    for py in 0..side {
        raw.push(0); // filter: none
        for px in 0..side {
            raw.push(if dark(px / SCALE, py / SCALE) { 0 } else { 255 });
        }
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend((side as u32).to_be_bytes());
    ihdr.extend((side as u32).to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grayscale, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    for (k, v) in texts {
        chunk(&mut png, b"tEXt", &[k.as_bytes(), &[0], v.as_bytes()].concat());
    }
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The `tEXt` entries of a PNG (for tests).
pub fn text_chunks(png: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let Some(data) = png.get(at + 8..at + 8 + len) else {
            break;
        };
        if kind == b"tEXt"
            && let Some(nul) = data.iter().position(|&b| b == 0)
        {
            out.push((
                String::from_utf8_lossy(&data[..nul]).into_owned(),
                String::from_utf8_lossy(&data[nul + 1..]).into_owned(),
            ));
        }
        at += 12 + len;
    }
    out
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend(kind);
    png.extend(data);
    let crc = crc32(&png[start..]);
    png.extend(crc.to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_texts() {
        // The CRC of "IEND" with no data is the well-known ae426082.
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        let png = code_image(&[("scene", "a=1"), ("page", "pages/index/index")]);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(
            text_chunks(&png),
            [
                ("scene".to_owned(), "a=1".to_owned()),
                ("page".to_owned(), "pages/index/index".to_owned())
            ]
        );
        assert_ne!(png, code_image(&[("scene", "a=2"), ("page", "pages/index/index")]));
    }
}
