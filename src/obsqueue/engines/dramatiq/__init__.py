"""Dramatiq adapters: on Redis (``redis_engine.py``) and on RabbitMQ (``amqp_engine.py``); each
module imports only its own broker's driver.
"""
