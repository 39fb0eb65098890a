"""`fastcycle distill`: a trained generator (the teacher) distilled into a cheaper one (the student), on
the training engine: teacher.py (the teacher's checkpoint, its networks, the student's config from it),
data.py (the teacher's data, held-out images), features.py (tap points, adapters, the feature loss),
model.py (the Distiller family), measure.py (cost, side-by-side speed, SSIM), report.py and command.py."""
