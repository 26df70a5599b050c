"""Dataset readers on small fixtures written in each public format."""

import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image

from models.grading.readers.lss import parse_object_label, read_lss
from models.grading.readers.metaimage import read_metaimage, write_metaimage
from models.grading.readers.rsna import read_rsna
from models.grading.readers.spider import read_spider

# --- MetaImage / SPIDER -------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_metaimage_round_trip(tmp_path, compress):
    arr = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    write_metaimage(tmp_path / "a.mha", arr, (0.5, 0.6, 3.0), (10.0, -20.0, 5.0), compress=compress)
    img = read_metaimage(tmp_path / "a.mha")
    np.testing.assert_array_equal(img.array, arr)
    # (z, y, x) index (1, 2, 3) -> origin + (3*0.5, 2*0.6, 1*3.0)
    lps = img.affine @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(lps[:3], [11.5, -18.8, 8.0])


def test_metaimage_big_endian_rotated_detached(tmp_path):
    arr = np.array([[[1, -2], [3, 4]]], dtype=">i2")
    (tmp_path / "d.raw").write_bytes(zlib.compress(arr.tobytes()))
    (tmp_path / "d.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryDataByteOrderMSB = True\nCompressedData = True\n"
        "TransformMatrix = 0 1 0 -1 0 0 0 0 1\nOffset = 0 0 0\nElementSpacing = 2 3 4\n"
        "DimSize = 2 2 1\nElementType = MET_SHORT\nElementDataFile = d.raw\n"
    )
    img = read_metaimage(tmp_path / "d.mhd")
    np.testing.assert_array_equal(img.array, [[[1, -2], [3, 4]]])
    # x index axis points along +y (LPS), y index axis along -x
    np.testing.assert_allclose(img.affine[:3, 2], [0, 2, 0])
    np.testing.assert_allclose(img.affine[:3, 1], [-3, 0, 0])


def test_metaimage_rejects_unknown_type(tmp_path):
    (tmp_path / "b.mha").write_bytes(b"NDims = 3\nDimSize = 1 1 1\nElementType = MET_FOO\n"
                                     b"ElementDataFile = LOCAL\n\x00")
    with pytest.raises(ValueError, match="MET_FOO"):
        read_metaimage(tmp_path / "b.mha")


def test_spider_reader(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((3, 8, 8), np.uint16)
    mask[1, 2:4, 2:6] = 202  # L4-L5 disc
    mask[1, 5:7, 2:6] = 100
    for seq in ("t1", "t2"):
        write_metaimage(tmp_path / "images" / f"1_{seq}.mha", mask.astype(np.int16) * 3,
                        (0.6, 0.6, 3.3))
    write_metaimage(tmp_path / "masks" / "1_t2.mha", mask, (0.6, 0.6, 3.3), compress=True)
    (tmp_path / "overview.csv").write_text("new_file_name,subset,scanner\n1_t2,training,Philips\n")
    (tmp_path / "radiological_gradings.csv").write_text(
        "Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,Disc herniation,"
        "Disc narrowing,Disc bulging,Pfirrman grade\n1,2,0,0,1,0,1,2,1,4\n1,6,0,0,0,0,0,0,0,2\n"
    )
    (case,) = read_spider(tmp_path)
    assert case.patient == "1" and set(case.images) == {"t1", "t2"} and set(case.masks) == {"t2"}
    assert case.overview["t2"]["scanner"] == "Philips"
    assert case.gradings == {"L4-L5": {"Modic": 0, "UP endplate": 0, "LOW endplate": 1,
                                       "Spondylolisthesis": 0, "Disc herniation": 1,
                                       "Disc narrowing": 2, "Disc bulging": 1, "Pfirrman grade": 4}}
    assert int((case.mask("t2").array == 202).sum()) == 8
    with pytest.raises(ValueError, match="t2_SPACE"):
        case.image("t2_SPACE")


# --- RSNA ---------------------------------------------------------------------------------


def _write_dicom(path, instance_number):
    ds = pydicom.Dataset()
    ds.InstanceNumber = instance_number
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_rsna_reader(tmp_path):
    from lumbar_common.vocabulary import finding_keys, rsna_key

    cols = [rsna_key(c, s, lv) for c, s, lv in finding_keys()]
    row = {k: "Normal/Mild" for k in cols}
    row["spinal_canal_stenosis_l4_l5"] = "Severe"
    row["left_subarticular_stenosis_l1_l2"] = ""
    (tmp_path / "train.csv").write_text(
        "study_id," + ",".join(cols) + "\n" + "4003253," + ",".join(row[k] for k in cols) + "\n"
    )
    (tmp_path / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n4003253,702807833,Sagittal T2/STIR\n"
        "4003253,1054713880,Sagittal T1\n4003253,2448190387,Axial T2\n"
    )
    (tmp_path / "train_label_coordinates.csv").write_text(
        "study_id,series_id,instance_number,condition,level,x,y\n"
        "4003253,702807833,8,Spinal Canal Stenosis,L4/L5,322.8,227.9\n"
        "4003253,1054713880,4,Left Neural Foraminal Narrowing,L5/S1,320.5,295.3\n"
    )
    for n in (10, 2, 1):
        _write_dicom(tmp_path / "train_images" / "4003253" / "702807833" / f"{n}.dcm", n)
    (study,) = read_rsna(tmp_path)
    assert study.labels["spinal_canal_stenosis_l4_l5"] == "Severe"
    assert "left_subarticular_stenosis_l1_l2" not in study.labels and len(study.labels) == 24
    assert study.series_roles == {
        "702807833": "sag_t2", "1054713880": "sag_t1", "2448190387": "ax_t2"
    }
    c = study.coordinates["left_neural_foraminal_narrowing_l5_s1"]
    assert (c.series_id, c.instance_number, c.x) == ("1054713880", 4, 320.5)
    assert [p.stem for p in study.series_files("702807833")] == ["1", "2", "10"]


def test_rsna_reader_rejects_bad_values(tmp_path):
    (tmp_path / "train.csv").write_text("study_id,spinal_canal_stenosis_l1_l2\n1,Severeish\n")
    with pytest.raises(ValueError, match="Severeish"):
        read_rsna(tmp_path)
    (tmp_path / "train.csv").write_text("study_id\n1\n")
    (tmp_path / "train_label_coordinates.csv").write_text(
        "study_id,series_id,instance_number,condition,level,x,y\n"
        "1,2,3,Spinal Canal Stenosis,L6/S1,1,1\n"
    )
    with pytest.raises(ValueError, match="L6/S1"):
        read_rsna(tmp_path)


# --- LSS ----------------------------------------------------------------------------------


_VOC = """<annotation><filename>p001_s07.png</filename>
<size><width>64</width><height>64</height></size>
{objects}</annotation>"""
_OBJ = ("<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>10</ymin><xmax>{x1}</xmax>"
        "<ymax>20</ymax></bndbox></object>")


def test_lss_reader(tmp_path):
    ann = tmp_path / "Foramina_Detection" / "Annotations"
    img = tmp_path / "Foramina_Detection" / "Images"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(img / "p001_s07.png")
    objects = (_OBJ.format(name="L4-L5_LFS_2", x0=5, x1=15)
               + _OBJ.format(name="L5S1 RFS 3", x0=20, x1=30))
    (ann / "p001_s07.xml").write_text(_VOC.format(objects=objects))
    (item,) = read_lss(tmp_path)
    got = [(b.level, b.side, b.grade) for b in item.boxes]
    assert got == [("L4-L5", "left", 2), ("L5-S1", "right", 3)]
    assert item.boxes[0].box == (5.0, 10.0, 15.0, 20.0)
    assert item.pixels().shape == (64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("L1-L2_RFS_0", ("L1-L2", "right", 0)), ("l3/l4 left Moderate", ("L3-L4", "left", 2)),
     ("LFS_L2_L3_1", ("L2-L3", "left", 1))],
)
def test_lss_label_spellings(name, expected):
    assert parse_object_label(name) == expected


@pytest.mark.parametrize("name", ["L4-L5_LFS", "L4-L5_2", "LFS_2", "L5-L6_LFS_1"])
def test_lss_label_errors(name):
    with pytest.raises(ValueError):
        parse_object_label(name)
