"""Mixture-of-experts layers: routers, grouped expert GEMMs, auxiliary losses."""
