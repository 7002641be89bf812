"""Training: the speaker network, its optimiser and epoch loop, and a whole run with resume.

``speaker_net`` holds ``SpeakerNet`` (encoder + loss, the checkpoints' key layout, the L2 pull
towards the pre-trained weights); ``trainer`` holds ``ModelTrainer`` (AdamW with layer-wise groups,
StepLR, the loss gate, one epoch); ``loop`` runs the epochs of ``trainSpeakerNet.py``, saving and
resuming checkpoints; ``dino`` trains the DINO bootstrap of ``trainDINO.py`` (student, EMA teacher,
schedules, collapse stop). The root ``SpeakerNet.py`` re-exports the original's names. Imports ``utils``,
``dataio``, ``models`` and ``loss``.
"""
