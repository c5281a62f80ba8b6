//! Every kind of hostile or unusual input gives a typed error or a documented conversion, never a panic.

use std::io::Cursor;

use delf_image::{DecodeLimits, ImageError, decode_bytes};
use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};

fn encode<P, C>(img: &ImageBuffer<P, C>, format: ImageFormat) -> Vec<u8>
where
    P: image::Pixel + image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn gradient(w: u32, h: u32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]))
}

/// A PNG whose header claims `w` x `h` pixels, with a valid CRC, followed by no image data.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    push_chunk(&mut png, b"IHDR", &ihdr);
    png
}

/// A decompression bomb's shape: a header claiming `w` x `h`, a small deflate stream, and the end chunk.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_header_only(w, h);
    push_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    push_chunk(&mut png, b"IEND", &[]);
    png
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc32(&body).to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn decompression_bomb_is_rejected_from_the_header() {
    let err = decode_bytes(&png_bomb(100_000, 100_000), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { width: 100_000, height: 100_000, .. }), "{err:?}");
}

#[test]
fn pixel_count_limit_applies_below_the_side_limit() {
    let limits = DecodeLimits { max_pixels: 1000, ..DecodeLimits::default() };
    let err = decode_bytes(&encode(&gradient(40, 40), ImageFormat::Png), &limits).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { width: 40, height: 40, .. }), "{err:?}");
}

#[test]
fn file_size_limit() {
    let limits = DecodeLimits { max_file_bytes: 10, ..DecodeLimits::default() };
    let err = decode_bytes(&encode(&gradient(8, 8), ImageFormat::Png), &limits).unwrap_err();
    assert!(matches!(err, ImageError::FileTooLarge { limit: 10, .. }), "{err:?}");
}

#[test]
fn zero_sized_png_is_empty() {
    // The PNG decoder refuses zero dimensions while reading the header; other formats reach our own check.
    let err = decode_bytes(&png_bomb(0, 5), &DecodeLimits::default()).unwrap_err();
    assert!(
        matches!(&err, ImageError::Empty { width: 0, height: 5 })
            || matches!(&err, ImageError::Corrupt(m) if m.contains("dimensions")),
        "{err:?}"
    );
}

#[test]
fn garbage_is_unsupported() {
    let err = decode_bytes(b"this is not an image at all", &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::UnsupportedFormat), "{err:?}");
    let err = decode_bytes(&[], &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::UnsupportedFormat), "{err:?}");
}

#[test]
fn truncated_jpeg_and_png_are_corrupt() {
    for format in [ImageFormat::Jpeg, ImageFormat::Png] {
        let full = encode(&gradient(64, 48), format);
        let cut = &full[..full.len() / 2];
        let err = decode_bytes(cut, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt(_)), "{format:?}: {err:?}");
    }
}

#[test]
fn header_only_png_is_corrupt_not_a_panic() {
    let err = decode_bytes(&png_header_only(32, 32), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt(_)), "{err:?}");
}

#[test]
fn one_by_n_images_decode() {
    let img = decode_bytes(&encode(&gradient(1, 37), ImageFormat::Png), &DecodeLimits::default()).unwrap();
    assert_eq!((img.width(), img.height()), (1, 37));
}

#[test]
fn sixteen_bit_grayscale_becomes_rgb8() {
    let gray: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(4, 3, |x, _| Luma([(x as u16) * 20_000]));
    let img = decode_bytes(&encode(&gray, ImageFormat::Png), &DecodeLimits::default()).unwrap();
    let p = img.rgb.get_pixel(3, 0).0;
    assert_eq!(p[0], p[1]);
    assert_eq!(p[1], p[2]);
    assert_eq!(p[0], (60_000u32 * 255 / 65_535) as u8);
}

#[test]
fn alpha_is_dropped() {
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_pixel(5, 5, Rgba([10, 20, 30, 0]));
    let img = decode_bytes(&encode(&rgba, ImageFormat::Png), &DecodeLimits::default()).unwrap();
    assert_eq!(img.rgb.get_pixel(2, 2).0, [10, 20, 30]);
    let la: ImageBuffer<LumaA<u8>, Vec<u8>> = ImageBuffer::from_pixel(5, 5, LumaA([99, 128]));
    let img = decode_bytes(&encode(&la, ImageFormat::Png), &DecodeLimits::default()).unwrap();
    assert_eq!(img.rgb.get_pixel(0, 0).0, [99, 99, 99]);
}

/// Inserts an EXIF APP1 segment with the given orientation right after the JPEG SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 offset
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    // 60 wide, 20 high; left third red. Orientation 6 = rotate 90 degrees clockwise to display.
    let src: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_fn(60, 20, |x, _| if x < 20 { Rgb([250, 0, 0]) } else { Rgb([0, 0, 250]) });
    let jpeg = with_exif_orientation(&encode(&src, ImageFormat::Jpeg), 6);
    let img = decode_bytes(&jpeg, &DecodeLimits::default()).unwrap();
    assert_eq!((img.width(), img.height()), (20, 60));
    // After a clockwise turn the former left edge is the top edge.
    let top = img.rgb.get_pixel(10, 5).0;
    let bottom = img.rgb.get_pixel(10, 55).0;
    assert!(top[0] > 200 && top[2] < 50, "top {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 50, "bottom {bottom:?}");
}

#[test]
fn real_photo_decodes_when_installed() {
    let home = std::env::var("DELF_HOME").expect("DELF_HOME is set by .cargo/config.toml");
    let path = std::path::Path::new(&home).join("data/opencv-doc/squirrel_cls.jpg");
    let img = delf_image::decode_file(&path, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{e}: run scripts/setup.sh first"));
    assert!(img.width() > 100 && img.height() > 100);
}

#[test]
fn missing_file_is_io_error() {
    let err =
        delf_image::decode_file(std::path::Path::new("/nonexistent/x.jpg"), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/x.jpg"));
}

/// A 16x12 CMYK JPEG (written by Pillow from an RGB image: left half red, right half black-ish; bottom half green)
/// made for this test; CMYK JPEGs are common from print workflows. They decode to RGB8 with the colours kept.
#[test]
fn cmyk_jpeg_becomes_rgb8_with_its_colours() {
    let bytes = include_bytes!("../../../tests/fixtures/cmyk_16x12.jpg");
    let d = decode_bytes(bytes, &DecodeLimits::default()).unwrap();
    assert_eq!((d.rgb.width(), d.rgb.height()), (16, 12));
    // Pillow reads back (255, 1, 60) at (2, 2) and (0, 255, 60) at (13, 10); allow JPEG and CMYK rounding.
    for ((x, y), want) in [((2, 2), [255u8, 1, 60]), ((13, 10), [0, 255, 60])] {
        let got = d.rgb.get_pixel(x, y).0;
        for c in 0..3 {
            assert!((i16::from(got[c]) - i16::from(want[c])).abs() <= 12, "pixel ({x},{y}) = {got:?}, want {want:?}");
        }
    }
}
