// JPEG EXIF orientation, reset so that the page shows an image as the service decodes it.
//
// An ES module of the service page (no build step).

// A copy of a JPEG whose EXIF orientation (tag 0x0112 in IFD0) is set to 1, "as stored";
// any other file is returned unchanged.
export async function withoutExifOrientation(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return file;
  const data = new DataView(bytes.buffer);
  for (let pos = 2; pos + 4 <= bytes.length && bytes[pos] === 0xff; ) {
    const marker = bytes[pos + 1];
    const length = data.getUint16(pos + 2);
    if (marker === 0xda) break; // start of scan: no more metadata segments
    const exif = pos + 4;
    const isExif =
      marker === 0xe1 && String.fromCharCode(...bytes.subarray(exif, exif + 4)) === "Exif";
    if (isExif) {
      const tiff = exif + 6;
      const little = bytes[tiff] === 0x49; // "II" little-endian, "MM" big-endian
      const ifd0 = tiff + data.getUint32(tiff + 4, little);
      const entries = data.getUint16(ifd0, little);
      for (let i = 0; i < entries; i += 1) {
        const entry = ifd0 + 2 + 12 * i;
        if (entry + 12 > pos + 2 + length) break;
        if (data.getUint16(entry, little) === 0x0112) {
          const copy = bytes.slice();
          new DataView(copy.buffer).setUint16(entry + 8, 1, little);
          return new Blob([copy], { type: file.type });
        }
      }
      return file;
    }
    pos += 2 + length;
  }
  return file;
}
