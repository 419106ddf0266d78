// The mask of a segmentation: its class indices read from the PNG's bytes, then coloured.
//
// An ES module of the service page (no build step); the browser test imports it directly.

// Browsers offer no way to read a PNG's stored sample values: an <img> of a palette PNG
// yields the palette's colours, a 16-bit PNG is reduced to 8 bits, and colour management
// may shift grey values. The class indices are therefore read from the file itself: the
// IHDR and IDAT chunks, inflated with the browser's DecompressionStream, unfiltered.
// Grey (colour type 0) and palette (3) PNGs of 1 to 16 bits, not interlaced.
export async function decodeIndexPng(base64) {
  if (!base64) throw maskError("The response has no mask (mask_png).");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (bytes.length < 8 || signature.some((b, i) => bytes[i] !== b)) {
    throw maskError("mask_png is not a PNG file.");
  }
  const data = new DataView(bytes.buffer);
  const idat = [];
  let header = null;
  for (let pos = 8; pos + 8 <= bytes.length; ) {
    const length = data.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    if (type === "IHDR") {
      header = {
        width: data.getUint32(pos + 8),
        height: data.getUint32(pos + 12),
        bitDepth: bytes[pos + 16],
        colorType: bytes[pos + 17],
        interlace: bytes[pos + 20],
      };
    } else if (type === "IDAT") {
      idat.push(bytes.subarray(pos + 8, pos + 8 + length));
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + length;
  }
  if (!header) throw maskError("mask_png has no IHDR chunk.");
  const { width, height, bitDepth, colorType, interlace } = header;
  if (![0, 3].includes(colorType) || ![1, 2, 4, 8, 16].includes(bitDepth) || interlace) {
    throw maskError(
      `mask_png must be a non-interlaced grey or palette PNG; got colour type ${colorType}, ` +
        `${bitDepth} bits, interlace ${interlace}.`,
    );
  }
  const stream = new Blob(idat).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const stride = Math.ceil((width * bitDepth) / 8);
  if (raw.length < height * (stride + 1)) throw maskError("mask_png's image data is truncated.");
  const rows = unfilter(raw, height, stride, Math.max(1, bitDepth / 8));
  return { width, height, indices: unpackSamples(rows, width, height, stride, bitDepth) };
}

export function maskError(message) {
  return Object.assign(new Error(message), { code: "bad_mask" });
}

// PNG filters (None, Sub, Up, Average, Paeth) undone row by row; bpp is bytes per pixel.
function unfilter(raw, height, stride, bpp) {
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    const up = row - stride; // previous row; absent (zeros) for the first
    for (let x = 0; x < stride; x += 1) {
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[up + x] : 0;
      const c = x >= bpp && y > 0 ? out[up + x - bpp] : 0;
      let predictor = 0;
      if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) {
        throw maskError(`mask_png row ${y} has an unknown filter type ${filter}.`);
      }
      out[row + x] = (line[x] + predictor) & 0xff;
    }
  }
  return out;
}

function unpackSamples(rows, width, height, stride, bitDepth) {
  const indices = new Uint16Array(width * height);
  for (let y = 0; y < height; y += 1) {
    const row = y * stride;
    for (let x = 0; x < width; x += 1) {
      let value;
      if (bitDepth === 8) value = rows[row + x];
      else if (bitDepth === 16) value = (rows[row + 2 * x] << 8) | rows[row + 2 * x + 1];
      else {
        const bit = x * bitDepth;
        const shift = 8 - bitDepth - (bit & 7);
        value = (rows[row + (bit >> 3)] >> shift) & ((1 << bitDepth) - 1);
      }
      indices[y * width + x] = value;
    }
  }
  return indices;
}

// One RGBA word per class index; indices without a colour, and ignore_index, stay
// transparent (0) so the original image shows through them.
export function buildPalette(colors, ignoreIndex) {
  const size = Math.max(256, colors.length);
  const bytes = new Uint8ClampedArray(size * 4);
  colors.forEach(([r, g, b], index) => {
    if (index !== ignoreIndex) bytes.set([r, g, b, 255], index * 4);
  });
  return new Uint32Array(bytes.buffer);
}

// Colours the mask once into an offscreen canvas (one 32-bit palette word per pixel) and
// counts the pixels of each index.
export function colourMask(mask, palette) {
  const { width, height, indices } = mask;
  const image = new ImageData(width, height);
  const out = new Uint32Array(image.data.buffer);
  const counts = new Map();
  for (let i = 0; i < indices.length; i += 1) {
    const index = indices[i];
    counts.set(index, (counts.get(index) || 0) + 1);
    out[i] = index < palette.length ? palette[index] : 0;
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return { canvas, counts };
}
