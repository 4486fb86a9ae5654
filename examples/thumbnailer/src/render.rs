//! Bytes of an image in, encoded thumbnails out: CPU only, no I/O (run it off the async runtime).
//!
//! - The format comes from the content (magic bytes), never from the key's extension: JPEG, PNG
//!   and WebP are read; anything else is refused.
//! - The image's header is read first, and an image of more than `max_pixels` is refused before a
//!   single pixel is decoded; the decoder's own allocation limit is a second fence.
//! - A file that is not an image of a format read here, or whose header is broken, is refused. A
//!   JPEG cut short in its scan data still decodes, the missing part grey, as browsers show it.
//! - The EXIF orientation is applied, so a portrait photo's thumbnail is upright.
//! - Each thumbnail keeps the original's format (the key keeps its extension): JPEG at the
//!   configured quality, PNG, and lossless WebP (the only WebP encoder of the `image` crate). The
//!   ICC colour profile is kept; EXIF (camera, location) is not copied.
//! - Sizes are made from the largest down, each from the previous one, so a 40-megapixel photo
//!   is reduced once and the small sizes cost little.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageError, ImageFormat, ImageReader};

use crate::failure::Failure;
use crate::layout::fit;

/// The formats the function reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::WebP => "WebP",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
            Format::WebP => ImageFormat::WebP,
        }
    }
}

/// How to render: limits and encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_pixels: u64,
    pub jpeg_quality: u8,
}

/// One encoded thumbnail.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    /// The size it was asked for (its box), not necessarily its longest side.
    pub size: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// What an image became.
#[derive(Debug, Clone)]
pub struct Rendering {
    pub format: Format,
    /// The original's dimensions, upright (after its EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// One per size, in the order of `sizes`.
    pub thumbnails: Vec<Thumbnail>,
}

/// Decodes `bytes` and encodes one thumbnail per entry of `sizes`.
pub fn render(bytes: &[u8], sizes: &[u32], options: Options) -> Result<Rendering, Failure> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    let format = match reader.format() {
        Some(ImageFormat::Jpeg) => Format::Jpeg,
        Some(ImageFormat::Png) => Format::Png,
        Some(ImageFormat::WebP) => Format::WebP,
        Some(other) => {
            return Err(Failure::Unsupported {
                format: format!("{other:?}"),
            });
        }
        None => return Err(Failure::NotAnImage),
    };
    let corrupt = |source: ImageError| match source {
        ImageError::Limits(_) => Failure::DecoderLimit(source),
        source => Failure::Corrupt {
            format: format.name(),
            source,
        },
    };
    let mut limits = image::Limits::default();
    // Up to 8 bytes a pixel (16-bit RGBA) plus the decoder's working memory.
    limits.max_alloc = Some(
        options
            .max_pixels
            .saturating_mul(8)
            .saturating_add(64 * 1024 * 1024),
    );
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > options.max_pixels {
        return Err(Failure::TooManyPixels {
            width,
            height,
            limit: options.max_pixels,
        });
    }
    // Broken metadata costs the thumbnail its rotation or colour profile, not the thumbnail.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());

    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut made: Vec<Option<Thumbnail>> = vec![None; sizes.len()];
    let mut previous: Option<DynamicImage> = None;
    for i in order {
        let size = sizes[i];
        let (w, h) = fit(width, height, size);
        let from = previous.as_ref().unwrap_or(&image);
        let scaled = shrink(from, w, h);
        let bytes = encode(&scaled, format, icc.as_deref(), options.jpeg_quality)?;
        made[i] = Some(Thumbnail {
            size,
            width: w,
            height: h,
            bytes,
        });
        previous = Some(scaled);
    }
    Ok(Rendering {
        format,
        width,
        height,
        thumbnails: made.into_iter().flatten().collect(),
    })
}

/// `image` at `width`×`height` (never larger than it is).
fn shrink(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    if (image.width(), image.height()) == (width, height) {
        return image.clone();
    }
    if image.width() >= 2 * width && image.height() >= 2 * height {
        // Averages every source pixel once: linear in the source, right for large reductions.
        image.thumbnail_exact(width, height)
    } else {
        // Close to the original size the averaging aliases; a filter costs little here.
        image.resize_exact(width, height, FilterType::CatmullRom)
    }
}

fn encode(
    image: &DynamicImage,
    format: Format,
    icc: Option<&[u8]>,
    jpeg_quality: u8,
) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let failed = |source| Failure::Encode {
        format: format.name(),
        source,
    };
    fn with_profile<E: ImageEncoder>(mut encoder: E, icc: Option<&[u8]>) -> E {
        if let Some(icc) = icc {
            // An encoder that cannot carry a profile still encodes the pixels.
            let _ = encoder.set_icc_profile(icc.to_vec());
        }
        encoder
    }
    let written = match format {
        Format::Jpeg => image.write_with_encoder(with_profile(
            JpegEncoder::new_with_quality(&mut bytes, jpeg_quality),
            icc,
        )),
        Format::Png => image.write_with_encoder(with_profile(
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, PngFilter::Adaptive),
            icc,
        )),
        Format::WebP => {
            image.write_with_encoder(with_profile(WebPEncoder::new_lossless(&mut bytes), icc))
        }
    };
    written.map_err(failed)?;
    debug_assert_eq!(
        image::guess_format(&bytes).ok(),
        Some(format.image_format())
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    const OPTIONS: Options = Options {
        max_pixels: 40_000_000,
        jpeg_quality: 85,
    };

    /// A gradient, so encoders have something to compress and corruption shows.
    fn photo(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        }))
    }

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn decoded(bytes: &[u8]) -> (ImageFormat, DynamicImage) {
        let format = image::guess_format(bytes).unwrap();
        (format, image::load_from_memory(bytes).unwrap())
    }

    #[test]
    fn every_format_keeps_its_format_and_the_ratio() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(300, 800, |x, y| {
            Rgba([x as u8, y as u8, 0, (x % 200) as u8])
        }));
        for (image, format) in [
            (photo(1600, 900), ImageFormat::Jpeg),
            (rgba.clone(), ImageFormat::Png),
            (rgba, ImageFormat::WebP),
        ] {
            let rendering = render(&encoded(&image, format), &[128, 512], OPTIONS).unwrap();
            assert_eq!(rendering.format.image_format(), format);
            assert_eq!(
                (rendering.width, rendering.height),
                (image.width(), image.height())
            );
            let sizes: Vec<_> = rendering
                .thumbnails
                .iter()
                .map(|t| (t.size, t.width, t.height))
                .collect();
            let expected = if format == ImageFormat::Jpeg {
                vec![(128, 128, 72), (512, 512, 288)]
            } else {
                vec![(128, 48, 128), (512, 192, 512)]
            };
            assert_eq!(sizes, expected, "{format:?}");
            for thumbnail in &rendering.thumbnails {
                let (found, pixels) = decoded(&thumbnail.bytes);
                assert_eq!(found, format);
                assert_eq!(
                    (pixels.width(), pixels.height()),
                    (thumbnail.width, thumbnail.height)
                );
                // Transparency survives in the formats that have it.
                assert_eq!(pixels.color().has_alpha(), format != ImageFormat::Jpeg);
            }
        }
    }

    #[test]
    fn small_images_keep_their_size() {
        let rendering = render(
            &encoded(&photo(100, 40), ImageFormat::Png),
            &[64, 128],
            OPTIONS,
        )
        .unwrap();
        let sizes: Vec<_> = rendering
            .thumbnails
            .iter()
            .map(|t| (t.size, t.width, t.height))
            .collect();
        assert_eq!(sizes, [(64, 64, 26), (128, 100, 40)]);
        // The unchanged size is the original's pixels, re-encoded losslessly.
        let (_, same) = decoded(&rendering.thumbnails[1].bytes);
        assert_eq!(same.to_rgb8(), photo(100, 40).to_rgb8());
    }

    #[test]
    fn thumbnails_look_like_the_image() {
        // Left half black, right half white: each thumbnail keeps the split where it was.
        let split = DynamicImage::ImageRgb8(RgbImage::from_fn(1000, 500, |x, _| {
            if x < 500 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        }));
        let rendering = render(&encoded(&split, ImageFormat::Png), &[100, 400], OPTIONS).unwrap();
        for thumbnail in &rendering.thumbnails {
            let (_, pixels) = decoded(&thumbnail.bytes);
            let pixels = pixels.to_luma8();
            let (w, h) = pixels.dimensions();
            assert!(pixels.get_pixel(w / 4, h / 2)[0] < 10, "left stays black");
            assert!(
                pixels.get_pixel(3 * w / 4, h / 2)[0] > 245,
                "right stays white"
            );
        }
    }

    /// A minimal little-endian EXIF block holding only an orientation.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"II*\0".to_vec();
        exif.extend(8u32.to_le_bytes()); // first IFD right after the header
        exif.extend(1u16.to_le_bytes()); // one entry
        exif.extend(0x0112u16.to_le_bytes()); // Orientation
        exif.extend(3u16.to_le_bytes()); // SHORT
        exif.extend(1u32.to_le_bytes()); // one value
        exif.extend(value.to_le_bytes());
        exif.extend([0, 0]);
        exif.extend(0u32.to_le_bytes()); // no next IFD
        exif
    }

    #[test]
    fn the_exif_orientation_is_applied() {
        let mut bytes = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut bytes, 90);
        // 6: the camera was turned; viewers rotate 90° clockwise.
        encoder.set_exif_metadata(exif_orientation(6)).unwrap();
        photo(1600, 900).write_with_encoder(encoder).unwrap();
        let rendering = render(&bytes, &[128], OPTIONS).unwrap();
        assert_eq!((rendering.width, rendering.height), (900, 1600));
        let thumbnail = &rendering.thumbnails[0];
        assert_eq!((thumbnail.width, thumbnail.height), (72, 128));
        let (_, pixels) = decoded(&thumbnail.bytes);
        assert_eq!((pixels.width(), pixels.height()), (72, 128));
    }

    #[test]
    fn refuses_what_it_cannot_or_should_not_decode() {
        let jpeg = encoded(&photo(200, 100), ImageFormat::Jpeg);
        // Cut inside its header (a JPEG cut in its scan data decodes, the rest grey, as browsers
        // show it).
        let truncated = jpeg[..120].to_vec();
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
        let many = Options {
            max_pixels: 200 * 100 - 1,
            ..OPTIONS
        };
        let cases: [(&[u8], Options, &str); 6] = [
            (b"hello, this is text", OPTIONS, "not_an_image"),
            (b"", OPTIONS, "not_an_image"),
            (&gif, OPTIONS, "unsupported_format"),
            (b"\xff\xd8\xff\xe0 broken", OPTIONS, "corrupt_image"),
            (&truncated, OPTIONS, "corrupt_image"),
            (&jpeg, many, "image_too_large"),
        ];
        for (bytes, options, code) in cases {
            let failure = render(bytes, &[128], options).unwrap_err();
            assert_eq!(failure.code(), code, "{failure}");
            assert!(failure.status().is_client_error());
        }
        // Exactly at the limit is allowed.
        let exact = Options {
            max_pixels: 200 * 100,
            ..OPTIONS
        };
        assert!(render(&jpeg, &[128], exact).is_ok());
    }
}
