//! The uploads of the thumbnails row, made in memory with the `image` crate: photo-like JPEGs
//! (1600×1200, quality 90: a sky, hills, a sun and sensor grain, so the encoder keeps a realistic
//! amount of detail, a few hundred KB each) and, for a share of them, PNG screenshots (1280×800,
//! flat panels and lines of "text"). A few distinct pictures are made and reused under different
//! keys: the thumbnailer decodes every upload anyway.

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder as _, Rgb, RgbImage};

/// One object to upload.
#[derive(Clone)]
pub struct Upload {
    /// Under `uploads/`, with the extension the trigger's filter looks for.
    pub key: String,
    pub content_type: &'static str,
    pub bytes: Bytes,
}

const PHOTO: (u32, u32) = (1600, 1200);
const SCREENSHOT: (u32, u32) = (1280, 800);
/// Distinct pictures of each kind.
const VARIANTS: u32 = 4;

/// `count` uploads; every `png_every`-th one (none when 0) a PNG screenshot, the others JPEGs.
pub fn uploads(count: u64, png_every: u64) -> Vec<Upload> {
    let photos: Vec<Bytes> = (0..VARIANTS).map(|seed| jpeg(&photo(seed))).collect();
    let screenshots: Vec<Bytes> = if png_every == 0 {
        Vec::new()
    } else {
        (0..VARIANTS).map(|seed| png(&screenshot(seed))).collect()
    };
    (0..count)
        .map(|index| {
            let variant = (index % u64::from(VARIANTS)) as usize;
            if png_every > 0 && index % png_every == png_every - 1 {
                Upload {
                    key: format!("uploads/screenshots/shot-{index:05}.png"),
                    content_type: "image/png",
                    bytes: screenshots[variant].clone(),
                }
            } else {
                Upload {
                    key: format!("uploads/2024/IMG_{index:05}.JPG"),
                    content_type: "image/jpeg",
                    bytes: photos[variant].clone(),
                }
            }
        })
        .collect()
}

/// "200 images (180 JPEG 1600×1200 ~420 KB, 20 PNG 1280×800 ~90 KB)".
pub fn describe(uploads: &[Upload]) -> String {
    let mut parts = Vec::new();
    for (content_type, name, (width, height)) in [
        ("image/jpeg", "JPEG", PHOTO),
        ("image/png", "PNG", SCREENSHOT),
    ] {
        let sizes: Vec<usize> = uploads
            .iter()
            .filter(|u| u.content_type == content_type)
            .map(|u| u.bytes.len())
            .collect();
        if !sizes.is_empty() {
            let mean = sizes.iter().sum::<usize>() / sizes.len() / 1024;
            parts.push(format!(
                "{} {name} {width}×{height} ~{mean} KB",
                sizes.len()
            ));
        }
    }
    format!("{} images ({})", uploads.len(), parts.join(", "))
}

/// xorshift32: deterministic grain, the same images in every run.
struct Grain(u32);

impl Grain {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// -amplitude..=amplitude.
    fn offset(&mut self, amplitude: i32) -> i32 {
        (self.next() % (2 * amplitude as u32 + 1)) as i32 - amplitude
    }
}

fn clamp(value: i32) -> u8 {
    value.clamp(0, 255) as u8
}

/// A landscape: a sky getting lighter toward the horizon, a sun, hills with a textured meadow,
/// and per-pixel grain as a camera sensor leaves it.
fn photo(seed: u32) -> RgbImage {
    let (width, height) = PHOTO;
    let mut grain = Grain(0x9e37_79b9 ^ (seed.wrapping_add(1).wrapping_mul(0x85eb_ca6b)));
    let phase = seed as f32 * 1.7;
    let sun = (
        width as f32 * (0.2 + 0.15 * seed as f32),
        height as f32 * 0.25,
    );
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let horizon = 0.55
            + 0.08 * (fx * 5.0 + phase).sin()
            + 0.03 * (fx * 17.0 + phase * 2.0).sin()
            + 0.01 * (fx * 61.0).sin();
        let [r, g, b] = if fy < horizon {
            let light = fy / horizon;
            let (dx, dy) = (x as f32 - sun.0, y as f32 - sun.1);
            let glow = (1.0 - (dx * dx + dy * dy).sqrt() / 90.0).max(0.0);
            let disc = if glow > 0.0 {
                120.0 + 135.0 * glow
            } else {
                0.0
            };
            [
                60.0 + 120.0 * light + disc,
                110.0 + 90.0 * light + disc * 0.9,
                200.0 + 40.0 * light + disc * 0.3,
            ]
        } else {
            let depth = (fy - horizon) / (1.0 - horizon);
            let blades = ((x as f32 * 0.9 + (y as f32 * 0.13).sin() * 6.0).sin()
                * (y as f32 * 0.45 + phase).sin())
                * 22.0;
            let patches = ((fx * 9.0 + phase).sin() * (fy * 7.0).cos()) * 25.0;
            [
                70.0 + 40.0 * depth + blades * 0.5 + patches,
                110.0 + 50.0 * depth + blades + patches,
                40.0 + 20.0 * depth + blades * 0.3,
            ]
        };
        Rgb([
            clamp(r as i32 + grain.offset(6)),
            clamp(g as i32 + grain.offset(6)),
            clamp(b as i32 + grain.offset(6)),
        ])
    })
}

/// A desktop window: a title bar, a sidebar, and lines of dark "words" on white.
fn screenshot(seed: u32) -> RgbImage {
    let (width, height) = SCREENSHOT;
    let mut grain = Grain(0x2545_f491 ^ seed.wrapping_mul(0x27d4_eb2d).wrapping_add(7));
    // Word lengths per line, drawn once: lines of text, not noise.
    let words: Vec<Vec<u32>> = (0..height / 18)
        .map(|_| (0..24).map(|_| 20 + grain.next() % 70).collect())
        .collect();
    RgbImage::from_fn(width, height, |x, y| {
        if y < 36 {
            return Rgb([40, 44, 52 + (x * 40 / width) as u8]);
        }
        if x < 220 {
            let item = (y - 36) / 28;
            return if item % 7 == (seed % 7) {
                Rgb([66, 133, 244])
            } else {
                Rgb([243, 244, 246])
            };
        }
        let (line, row) = ((y - 36) / 18, (y - 36) % 18);
        if !(4..14).contains(&row) {
            return Rgb([255, 255, 255]);
        }
        let mut start = 240;
        for length in words.get(line as usize).into_iter().flatten() {
            if x >= start && x < start + length {
                // Glyph strokes: a pattern inside each word.
                let ink = ((x - start) * 7 + row * 3) % 11 < 5;
                return if ink {
                    Rgb([30, 30, 30])
                } else {
                    Rgb([255, 255, 255])
                };
            }
            start += length + 9;
        }
        Rgb([255, 255, 255])
    })
}

fn jpeg(image: &RgbImage) -> Bytes {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(image)
        .expect("encoding a JPEG in memory");
    Bytes::from(bytes)
}

/// Compressed as a screenshot tool saves it (best zlib, adaptive filters), not as fast as possible.
fn png(image: &RgbImage) -> Bytes {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG in memory");
    Bytes::from(bytes)
}
