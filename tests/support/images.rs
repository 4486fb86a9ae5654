//! Images for the image-pipeline tests: made in memory with the `image` crate (no fixture files),
//! and read back to check what a function wrote.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// An opaque `width`×`height` gradient: something for encoders to compress, nothing for them to
/// drop.
pub fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x % 256) as u8,
            (y % 256) as u8,
            ((x / 4 + y / 4) % 256) as u8,
        ])
    }))
}

/// A `width`×`height` image with a transparent part, for the formats with an alpha channel.
pub fn translucent(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        let alpha = if x < width / 2 { 255 } else { 64 };
        Rgba([(y % 256) as u8, (x % 256) as u8, 128, alpha])
    }))
}

/// `image` encoded as `format` (WebP: lossless, the `image` crate's only WebP encoder).
pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .unwrap_or_else(|e| panic!("encoding a {format:?} test image: {e}"));
    bytes.into_inner()
}

/// The format (from the content) and dimensions of an encoded image; panics when it is none.
pub fn decode(bytes: &[u8]) -> (ImageFormat, u32, u32) {
    let format = image::guess_format(bytes)
        .unwrap_or_else(|e| panic!("not an image ({} bytes): {e}", bytes.len()));
    let image = image::load_from_memory_with_format(bytes, format)
        .unwrap_or_else(|e| panic!("a {format:?} that does not decode: {e}"));
    (format, image.width(), image.height())
}
