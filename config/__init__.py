"""Configuration as data: runtime settings (environment), personas and, later, tiers.

Code reads configuration only through the typed models here: ``Settings`` for process-wide
knobs taken from ``VOXTUTOR_*`` environment variables, and ``Persona`` for each tutor or
examiner defined in ``config/personas/*.yaml``.
"""

from config.personas import Persona, PersonaError, list_personas, load_persona
from config.settings import Settings, get_settings

__all__ = ["Persona", "PersonaError", "Settings", "get_settings", "list_personas", "load_persona"]
