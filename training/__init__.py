"""Training: one run loop and the two methods it drives.

``run`` is the loop (folders, resume, DDP, epochs, checkpoints, records) and the interfaces a method and
its trainer implement; ``speaker_net`` holds ``SpeakerNet`` (encoder + loss, the checkpoints' key layout,
the L2 pull towards the initial weights); ``speaker_trainer`` holds ``ModelTrainer`` and the method of
``trainSpeakerNet.py``; ``dino`` the method of ``trainDINO.py`` (EMA teacher, schedules, collapse stop).
The root ``SpeakerNet.py`` re-exports the original's names. Imports ``utils``, ``dataio``, ``models``
and ``loss``.
"""
