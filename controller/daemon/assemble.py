"""Build a site's controller from its validated site file: load the model and the series it names.

The pure core (`controller.core.SiteController`) reads no files; this is where its inputs come from disk.
"""

from __future__ import annotations

from controller.core import SiteController
from controller.daemon.forecast_sources import builder_from_site
from controller.site_config import SiteConfig
from models import load_building
from models.series import load_tariff


def build_site_controller(site: SiteConfig) -> SiteController:
    """The site's estimator and MPC, with its model, forecast sources and tariff loaded from their files."""
    net = load_building(site.model_path)
    disturbances = builder_from_site(site, net)
    tariff = load_tariff(site.tariff, site.base_dir)[1] if site.tariff.value else {}
    return SiteController(site, net, disturbances, tariff)
