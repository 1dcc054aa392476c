"""The subnet builder: from a declarative spec (or a shipped example, or an idea drafted by an LLM) to a
complete project that depends on this framework as a library.

The reusable machinery generated projects call at run time lives here too: the spec model (``spec``), field
types and their random values (``fields``), synthesizers (``synthesis``), the spec-to-scorer mapping
(``scoring``), miner behaviours around an owner's handler (``handlers``) and the task base class that ties
them together (``runtime``). Generation (``generate``) and the LLM loop (``agent``) only run at build time.
"""
