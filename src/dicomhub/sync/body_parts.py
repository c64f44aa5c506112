"""Body Part Examined and Laterality as SNOMED CT codings (PS3.16 Annex L, CID 244)."""

from __future__ import annotations

import re

__all__ = ["BODY_PARTS", "LATERALITY", "SNOMED", "body_site", "laterality"]

SNOMED = "http://snomed.info/sct"

# PS3.16 Annex L Table L-1 "Correspondence of Anatomic Region Codes and Body Part Examined
# Defined Terms": the commonly sent terms, with the SNOMED CT concept and code meaning of the
# current edition (CP 1962 and CP 2166 moved ABDOMEN, CHEST, PELVIS and the spine segments to
# new concepts; THORAX is the Defined Term's synonym of CHEST and shares its code).
BODY_PARTS: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ABDOMINALAORTA": ("7832008", "Abdominal aorta"),
    "ACJOINT": ("85856004", "Acromioclavicular joint"),
    "ADRENAL": ("23451007", "Adrenal gland"),
    "AMNIOTICFLUID": ("77012006", "Amniotic fluid"),
    "ANKLE": ("70258002", "Ankle joint"),
    "ANUSRECTUMSIGMD": ("110612005", "Anus, rectum and sigmoid colon"),
    "AORTA": ("15825003", "Aorta"),
    "AORTICARCH": ("57034009", "Aortic arch"),
    "APPENDIX": ("66754008", "Appendix"),
    "ARM": ("40983000", "Arm"),
    "ARTERY": ("51114001", "Artery"),
    "ASCAORTA": ("54247002", "Ascending aorta"),
    "ASCENDINGCOLON": ("9040008", "Ascending colon"),
    "AXILLA": ("91470000", "Axilla"),
    "BACK": ("77568009", "Back"),
    "BASILARA": ("59011009", "Basilar artery"),
    "BILEDUCT": ("28273000", "Bile duct"),
    "BILIARYTRACT": ("34707002", "Biliary tract"),
    "BLADDER": ("89837001", "Bladder"),
    "BLADDERURETHRA": ("110837003", "Bladder and urethra"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "BRONCHUS": ("955009", "Bronchus"),
    "BUTTOCK": ("46862004", "Buttock"),
    "CALCANEUS": ("80144004", "Calcaneus"),
    "CALF": ("53840002", "Calf of leg"),
    "CARDIOVASCSYS": ("113257007", "Cardiovascular system"),
    "CAROTID": ("69105007", "Carotid Artery"),
    "CEREBELLUM": ("113305005", "Cerebellum"),
    "CERVIX": ("71252005", "Cervix"),
    "CHEEK": ("60819002", "Cheek"),
    "CHEST": ("816094009", "Chest"),
    "CHESTABDOMEN": ("416550000", "Chest and Abdomen"),
    "CHESTABDPELVIS": ("416775004", "Chest, Abdomen and Pelvis"),
    "CIRCLEOFWILLIS": ("11279006", "Circle of Willis"),
    "CLAVICLE": ("51299004", "Clavicle"),
    "COCCYX": ("64688005", "Coccyx"),
    "COLON": ("71854001", "Colon"),
    "CORONARYARTERY": ("41801008", "Coronary artery"),
    "CSPINE": ("122494005", "Cervical spine"),
    "CTSPINE": ("1217257000", "Cervico-thoracic spine"),
    "DUODENUM": ("38848004", "Duodenum"),
    "EAR": ("117590005", "Ear"),
    "ELBOW": ("16953009", "Elbow joint"),
    "ESOPHAGUS": ("32849002", "Esophagus"),
    "EXTREMITY": ("66019005", "Extremity"),
    "EYE": ("81745001", "Eye"),
    "EYELID": ("80243003", "Eyelid"),
    "FACE": ("89545001", "Face"),
    "FEMUR": ("71341001", "Femur"),
    "FIBULA": ("87342007", "Fibula"),
    "FINGER": ("7569003", "Finger"),
    "FOOT": ("56459004", "Foot"),
    "FOREARM": ("14975008", "Forearm"),
    "GALLBLADDER": ("28231008", "Gallbladder"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "HUMERUS": ("85050009", "Humerus"),
    "IAC": ("361078006", "Internal Auditory Canal"),
    "ILEUM": ("34516001", "Ileum"),
    "ILIUM": ("22356005", "Ilium"),
    "JAW": ("661005", "Jaw region"),
    "JEJUNUM": ("21306003", "Jejunum"),
    "KIDNEY": ("64033007", "Kidney"),
    "KNEE": ("72696002", "Knee"),
    "LARGEINTESTINE": ("14742008", "Large intestine"),
    "LARYNX": ("4596009", "Larynx"),
    "LIVER": ("10200004", "Liver"),
    "LOWERLEG": ("30021000", "Lower leg"),
    "LOWERLIMB": ("61685007", "Lower limb"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LSSPINE": ("1217253001", "Lumbo-sacral spine"),
    "LUNG": ("39607008", "Lung"),
    "MANDIBLE": ("91609006", "Mandible"),
    "MAXILLA": ("70925003", "Maxilla"),
    "MEDIASTINUM": ("72410000", "Mediastinum"),
    "MOUTH": ("123851003", "Mouth"),
    "NASOPHARYNX": ("360955006", "Nasopharynx"),
    "NECK": ("45048000", "Neck"),
    "NECKCHEST": ("417437006", "Neck and Chest"),
    "NECKCHESTABDOMEN": ("416152001", "Neck, Chest and Abdomen"),
    "NECKCHESTABDPELV": ("416319003", "Neck, Chest, Abdomen and Pelvis"),
    "NOSE": ("45206002", "Nose"),
    "ORBIT": ("363654007", "Orbital structure"),
    "OVARY": ("15497006", "Ovary"),
    "PANCREAS": ("15776009", "Pancreas"),
    "PAROTID": ("45289007", "Parotid gland"),
    "PATELLA": ("64234005", "Patella"),
    "PELVIS": ("816092008", "Pelvis"),
    "PELVISLOWEXTREMT": ("1231522001", "Pelvis and lower extremities"),
    "PENIS": ("18911002", "Penis"),
    "PHANTOM": ("706342009", "Phantom"),
    "PHARYNX": ("54066008", "Pharynx"),
    "PROSTATE": ("41216001", "Prostate"),
    "RADIUS": ("62413002", "Radius"),
    "RADIUSULNA": ("110535000", "Radius and ulna"),
    "RECTUM": ("34402009", "Rectum"),
    "RIB": ("113197003", "Rib"),
    "SCALP": ("41695006", "Scalp"),
    "SCAPULA": ("79601000", "Scapula"),
    "SCROTUM": ("20233005", "Scrotum"),
    "SELLA": ("42575006", "Sella turcica"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SIJOINT": ("39723000", "Sacroiliac joint"),
    "SKULL": ("89546000", "Skull"),
    "SMALLINTESTINE": ("30315005", "Small intestine"),
    "SPINALCORD": ("2748008", "Spinal cord"),
    "SPINE": ("421060004", "Spine"),
    "SPLEEN": ("78961009", "Spleen"),
    "SSPINE": ("54735007", "Sacrum"),
    "STERNUM": ("56873002", "Sternum"),
    "STOMACH": ("69695003", "Stomach"),
    "TESTIS": ("40689003", "Testis"),
    "THIGH": ("68367000", "Thigh"),
    "THORAX": ("816094009", "Thorax"),
    "THUMB": ("76505004", "Thumb"),
    "THYMUS": ("9875009", "Thymus"),
    "THYROID": ("69748006", "Thyroid"),
    "TIBIA": ("12611008", "Tibia"),
    "TIBIAFIBULA": ("110536004", "Tibia and fibula"),
    "TLSPINE": ("1217256009", "Thoraco-lumbar spine"),
    "TMJ": ("53620006", "Temporomandibular joint"),
    "TOE": ("29707007", "Toe"),
    "TONGUE": ("21974007", "Tongue"),
    "TRACHEA": ("44567001", "Trachea"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "ULNA": ("23416004", "Ulna"),
    "UPPERARM": ("40983000", "Upper arm"),
    "UPPERLIMB": ("53120007", "Upper limb"),
    "URETER": ("87953007", "Ureter"),
    "URETHRA": ("13648007", "Urethra"),
    "UTERUS": ("35039007", "Uterus"),
    "VAGINA": ("76784001", "Vagina"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "WRIST": ("74670003", "Wrist joint"),
    "ZYGOMA": ("13881006", "Zygoma"),
}

# Laterality (0020,0060) and Image Laterality (0020,0062) enumerated values, as CID 244 codes.
# U (unpaired) has no laterality to state.
LATERALITY: dict[str, tuple[str, str]] = {
    "R": ("24028007", "Right"),
    "L": ("7771000", "Left"),
    "B": ("51440002", "Right and left"),
}

# Devices write "WHOLE BODY", "L-SPINE" or "c_spine" for the Defined Terms WHOLEBODY, LSPINE...
_SEPARATORS = re.compile(r"[\s_\-]+")


def body_site(term: str) -> dict[str, str] | None:
    """The SNOMED CT Coding of a Body Part Examined term; None when the standard has none."""
    found = BODY_PARTS.get(_SEPARATORS.sub("", term).upper())
    if found is None:
        return None
    return {"system": SNOMED, "code": found[0], "display": found[1]}


def laterality(value: str) -> dict[str, str] | None:
    found = LATERALITY.get(value.strip().upper())
    if found is None:
        return None
    return {"system": SNOMED, "code": found[0], "display": found[1]}
