#!/usr/bin/python3
"""Writes the thumbnail tests' fixtures (run from testdata/, needs
python3-pydicom, python3-numpy and DCMTK's dcmcjpeg and dcmcrle):

  native-ct.dcm        64x48 CT, 16-bit signed, rescale -1024, window 40/400
  native-mono1.dcm     64x48 CR, 12 bits stored, MONOCHROME1, no window
  native-multiframe.dcm 3 frames of 32x32, 16-bit, each frame a flat value
  rgb.dcm              40x30 RGB 8-bit (source of the JPEG fixture)
  jpeg-baseline.dcm    rgb.dcm in JPEG Baseline (dcmcjpeg +eb)
  rle.dcm              native-ct.dcm in RLE Lossless (dcmcrle): no preview
  multiframe-8bit.dcm  5 frames of 96x96, 8-bit, textured, frame k's corner 50*k
                       (source of the two below, removed once they are made)
  jpeg-multiframe.dcm  multiframe-8bit.dcm in JPEG Baseline, one fragment a
                       frame and a Basic Offset Table (dcmcjpeg +eb)
  be-ow-8bit.dcm       1x6 8-bit MONOCHROME2 in Explicit VR Big Endian, Pixel Data
                       OW (its bytes swapped in pairs, PS3.5 A.3), window 128/256
  jpeg-fragmented.dcm  the same in fragments of 1 KiB with an empty Basic
                       Offset Table (dcmcjpeg +eb +fs 1 -ot): frames found
                       by their JPEG markers
  voilut-dx.dcm        1x7 DX, 12 of 16 bits, no window: a VOI LUT Sequence of
                       5 16-bit entries from 100 (values below and above clamp)
  voilut-cr-8bit.dcm   1x6 CR, 8-bit, MONOCHROME1, no window: a VOI LUT of 4
                       8-bit entries from 10, two a word in OW
  modlut-implicit.dcm  1x6 CR in Implicit VR, 16-bit signed: a Modality LUT of 4
                       16-bit entries from -2 (its descriptor read as SS), then
                       a VOI LUT of 3 8-bit entries from 201, one a word
"""
import os
import subprocess
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

def base(sop_class, modality, rows, cols, n):
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = "2.25.%d" % (100 + n)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = "2.25.1"
    ds.SeriesInstanceUID = "2.25.2"
    ds.Rows, ds.Columns = rows, cols
    return ds

def save(ds, name):
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(name, write_like_original=False)

ct = base("1.2.840.10008.5.1.4.1.1.2", "CT", 48, 64, 1)
ct.SamplesPerPixel, ct.PhotometricInterpretation = 1, "MONOCHROME2"
ct.BitsAllocated, ct.BitsStored, ct.HighBit, ct.PixelRepresentation = 16, 16, 15, 1
ct.RescaleIntercept, ct.RescaleSlope = -1024, 1
ct.WindowCenter, ct.WindowWidth = 40, 400
hu = np.tile(np.linspace(-300, 400, 64), (48, 1)).astype(np.int16)   # left dark, right bright
ct.PixelData = (hu + 1024).astype("<i2").tobytes()
save(ct, "native-ct.dcm")

cr = base("1.2.840.10008.5.1.4.1.1.1", "CR", 48, 64, 2)
cr.SamplesPerPixel, cr.PhotometricInterpretation = 1, "MONOCHROME1"
cr.BitsAllocated, cr.BitsStored, cr.HighBit, cr.PixelRepresentation = 16, 12, 11, 0
v = np.tile(np.linspace(0, 4095, 64), (48, 1)).astype("<u2")            # left low, right high
cr.PixelData = v.tobytes()
save(cr, "native-mono1.dcm")

mf = base("1.2.840.10008.5.1.4.1.1.7.3", "OT", 32, 32, 3)
mf.SamplesPerPixel, mf.PhotometricInterpretation = 1, "MONOCHROME2"
mf.BitsAllocated, mf.BitsStored, mf.HighBit, mf.PixelRepresentation = 16, 16, 15, 0
mf.NumberOfFrames = 3
mf.WindowCenter, mf.WindowWidth = 100, 200
frames = np.stack([np.full((32, 32), x, "<u2") for x in (0, 100, 200)])  # middle frame: mid grey
mf.PixelData = frames.tobytes()
save(mf, "native-multiframe.dcm")

us = base("1.2.840.10008.5.1.4.1.1.6.1", "US", 30, 40, 4)
us.SamplesPerPixel, us.PhotometricInterpretation, us.PlanarConfiguration = 3, "RGB", 0
us.BitsAllocated, us.BitsStored, us.HighBit, us.PixelRepresentation = 8, 8, 7, 0
rgb = np.zeros((30, 40, 3), np.uint8)
rgb[:, :, 0] = 220                                                       # red everywhere
rgb[15:, :, 2] = 200                                                     # lower half magenta
us.PixelData = rgb.tobytes()
save(us, "rgb.dcm")

m8 = base("1.2.840.10008.5.1.4.1.1.7.2", "OT", 96, 96, 5)
m8.SamplesPerPixel, m8.PhotometricInterpretation = 1, "MONOCHROME2"
m8.BitsAllocated, m8.BitsStored, m8.HighBit, m8.PixelRepresentation = 8, 8, 7, 0
m8.NumberOfFrames = 5
rng = np.random.default_rng(8)
m8frames = rng.integers(0, 256, (5, 96, 96), dtype=np.uint8)         # texture: frames of several KiB
for k in range(5):
    m8frames[k, :24, :24] = 50 * k                                       # the middle frame's corner: 100
m8.PixelData = m8frames.tobytes()
save(m8, "multiframe-8bit.dcm")

be = base("1.2.840.10008.5.1.4.1.1.7", "OT", 1, 6, 6)
be.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"
be.SamplesPerPixel, be.PhotometricInterpretation = 1, "MONOCHROME2"
be.BitsAllocated, be.BitsStored, be.HighBit, be.PixelRepresentation = 8, 8, 7, 0
be.WindowCenter, be.WindowWidth = 128, 256
swapped = bytearray([10, 20, 30, 40, 50, 60])
swapped[0::2], swapped[1::2] = swapped[1::2], swapped[0::2]           # OW: 16-bit words, big endian
be.PixelData = bytes(swapped)
be["PixelData"].VR = "OW"
be.is_little_endian, be.is_implicit_VR = False, False
be.save_as("be-ow-8bit.dcm", write_like_original=False)

def lut_item(n, first, bits, data, signed=False):
    item = Dataset()
    item.add_new(0x00283002, "SS" if signed else "US", [n, first, bits])
    item.add_new(0x00283006, "OW", data)
    return [item]

def words(values):
    return np.array(values, "<u2").tobytes()

dx = base("1.2.840.10008.5.1.4.1.1.1.1", "DX", 1, 7, 7)
dx.SamplesPerPixel, dx.PhotometricInterpretation = 1, "MONOCHROME2"
dx.BitsAllocated, dx.BitsStored, dx.HighBit, dx.PixelRepresentation = 16, 12, 11, 0
dx.VOILUTSequence = lut_item(5, 100, 16, words([0, 1000, 30000, 60000, 65535]))
dx.PixelData = words([0, 100, 101, 102, 103, 104, 4095])
save(dx, "voilut-dx.dcm")

cr8 = base("1.2.840.10008.5.1.4.1.1.1", "CR", 1, 6, 8)
cr8.SamplesPerPixel, cr8.PhotometricInterpretation = 1, "MONOCHROME1"
cr8.BitsAllocated, cr8.BitsStored, cr8.HighBit, cr8.PixelRepresentation = 8, 8, 7, 0
cr8.VOILUTSequence = lut_item(4, 10, 8, bytes([0, 50, 200, 255]))     # two entries a word, the first low
cr8.PixelData = bytes([0, 10, 11, 12, 13, 200])
save(cr8, "voilut-cr-8bit.dcm")

mi = base("1.2.840.10008.5.1.4.1.1.1", "CR", 1, 6, 9)   # not XA: DCMTK ignores its Modality LUT
mi.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
mi.SamplesPerPixel, mi.PhotometricInterpretation = 1, "MONOCHROME2"
mi.BitsAllocated, mi.BitsStored, mi.HighBit, mi.PixelRepresentation = 16, 16, 15, 1
mi.ModalityLUTSequence = lut_item(4, -2, 16, words([200, 201, 202, 203]), signed=True)
mi.VOILUTSequence = lut_item(3, 201, 8, words([0, 128, 255]))
mi.PixelData = np.array([-5, -2, -1, 0, 1, 7], "<i2").tobytes()
mi.is_little_endian, mi.is_implicit_VR = True, True
mi.save_as("modlut-implicit.dcm", write_like_original=False)

subprocess.run(["dcmcjpeg", "+eb", "rgb.dcm", "jpeg-baseline.dcm"], check=True)
subprocess.run(["dcmcjpeg", "+eb", "multiframe-8bit.dcm", "jpeg-multiframe.dcm"], check=True)
subprocess.run(["dcmcjpeg", "+eb", "+fs", "1", "-ot", "multiframe-8bit.dcm", "jpeg-fragmented.dcm"], check=True)
os.remove("multiframe-8bit.dcm")
subprocess.run(["dcmcrle", "native-ct.dcm", "rle.dcm"], check=True)
