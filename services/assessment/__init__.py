"""Assessment steps: narrow, checked LLM steps that assess one learner turn.

A small model does narrow, checked steps well and open-ended ones badly, so each step here
asks one question with JSON-constrained output and checks the answer before it is used:
:mod:`services.assessment.gec` corrects a tutor's learner sentence (checked against the
language's Hunspell dictionary, :mod:`services.assessment.dictionary`);
:mod:`services.assessment.grading` grades an examiner's answer against the ACS question
bank's written reference. :mod:`services.assessment.json_chat` is their LLM client.
"""
