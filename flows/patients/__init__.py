"""Patient reports: one patient's prediction, its measured explanations and its own target evidence.

``build.build_report(store, patient_id)`` assembles the report JSON from a run's store (the deployed models,
embeddings, slide features, radiology, spatial and omics artifacts, the ranking); ``new_patient`` reads a
patient who is not in the cohort through the store's frozen encoders into the same report;
``cohort_reports`` writes every patient's report and an index page. The sections live beside them
(``radiology``, ``spatial``, ``targets``), and ``render`` (with ``render_radiology`` and ``figures``) draws a
report into a self-contained page with its exports.
"""
