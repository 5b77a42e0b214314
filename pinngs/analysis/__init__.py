"""What a lumen shows: its centerline (``centerline``), stenosis grading and Murray's law
(``stenosis``), its surface mesh (``surface``), and metrics against a ground truth (``evaluate``)."""
