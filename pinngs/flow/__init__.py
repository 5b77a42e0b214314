"""Blood flow on a reconstructed lumen.

    transit.py    the flow rate from bolus transit along the centerline
    reduced.py    Poiseuille + Young–Tsai pressure drop along a branch, FFR
    lesions.py    which narrowings have a jet, and the pressure drop across them
    network.py    how branches share the flow (Murray's law), the quasi-Poiseuille field
    estimate.py   the one flow estimator (``flow_on_lumen``) that every caller uses

The PINN lives in ``pinngs.pinn``.
"""
