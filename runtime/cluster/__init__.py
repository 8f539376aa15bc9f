"""Scale-out on NATS: session hosts register and take sessions; API replicas dispatch to them.

``voxtutor host`` is :mod:`.host` + :mod:`.agent`; an API replica (``voxtutor serve`` with
``VOXTUTOR_NATS_URL``) uses :mod:`.dispatch`. Subjects and buckets: :mod:`.bus`.
"""
